// Checkpoint → ModelWeights, driven by the tensor table.
#include "model/weights.h"

#include <cmath>
#include <fmt/format.h>
#include <cstring>
#include <set>
#include <unordered_map>

#include "base/numeric.h"
#include "base/thread_pool.h"
#include "model/tensor_table.h"
#include "ops/ops.h"

namespace dsa {

namespace {

Tensor to_f32_vector(const Tensor& t) {
  Tensor r = Tensor::empty(DType::F32, t.shape);
  float* o = r.ptr<float>();
  if (t.dtype == DType::F32) {
    std::copy(t.ptr<float>(), t.ptr<float>() + t.numel(), o);
  } else {
    for (int64_t i = 0; i < t.numel(); ++i) o[i] = bf16_to_f32(t.ptr<bf16>()[i]);
  }
  return r;
}

class Loader {
 public:
  Loader(const Checkpoint& ckpt, const ModelConfig& cfg) : ckpt_(ckpt) {
    // The table cannot be larger than the checkpoint: compare counts before building it, so a
    // config with absurd layer or expert counts fails at once instead of after seconds and GBs.
    const int64_t have = int64_t(ckpt.tensors().size()), need = main_tensor_count(cfg);
    DSA_CHECK(need <= have,
              "config.json describes {} tensors ({} layers, {} routed experts) but the checkpoint holds only {}",
              need, cfg.num_hidden_layers, cfg.n_routed_experts, have);
    // MTP layers are optional; their names are known only when a whole one could be present.
    const bool mtp = cfg.num_nextn_predict_layers == 0 ||
                     layer_tensor_count(cfg, cfg.num_hidden_layers, true) <= have - need;
    for (auto& s : tensor_table(cfg, mtp)) specs_[s.name] = s;
  }

  Tensor get(const std::string& name) {
    auto it = specs_.find(name);
    DSA_CHECK(it != specs_.end(), "internal: {} is not in the tensor table", name);
    const TensorSpec& spec = it->second;
    Tensor t = fetch(name, spec.shape, spec.kind);
    return t;
  }

  Fp8Matrix fp8(const std::string& name) {
    const TensorSpec& spec = specs_.at(name);
    Fp8Matrix m;
    m.w = fetch(name, spec.shape, spec.kind);
    m.out = spec.shape[0];
    m.in = spec.shape[1];
    const std::string sn = spec.scale_name();
    m.s = fetch_exact(sn, spec.scale_shape(), DType::F32);
    const float* s = m.s.ptr<float>();
    for (int64_t i = 0; i < m.s.numel(); ++i)
      DSA_CHECK(std::isfinite(s[i]) && s[i] > 0, "tensor {}: scale element {} is {} (must be finite and > 0)",
                sn, i, s[i]);
    return m;
  }

  const TensorSpec* spec(const std::string& name) const {
    auto it = specs_.find(name);
    return it == specs_.end() ? nullptr : &it->second;
  }

  // Every tensor in the checkpoint must be known; returns the names of MTP tensors (skipped).
  std::vector<std::string> check_unexpected(const std::set<std::string>& used) {
    std::vector<std::string> skipped;
    std::set<std::string> known;
    for (auto& [n, s] : specs_) {
      known.insert(n);
      if (s.kind == TensorKind::Fp8Matrix) known.insert(s.scale_name());
    }
    for (auto& [n, e] : ckpt_.tensors()) {
      DSA_CHECK(known.count(n), "unexpected tensor {} {} {} in {} (not part of deepseek_v32 with this config)",
                n, dtype_name(e.dtype), shape_str(e.shape), e.file);
      if (!used.count(n)) skipped.push_back(n);
    }
    return skipped;
  }

  std::set<std::string> used;

 private:
  Tensor fetch(const std::string& name, const Shape& shape, TensorKind kind) {
    const TensorEntry* e = ckpt_.find(name);
    const DType want = TensorSpec{name, kind, shape}.dtype();
    DSA_CHECK(e != nullptr, "missing tensor {} (expected {} {})", name, dtype_name(want), shape_str(shape));
    DSA_CHECK(e->shape == shape, "tensor {} has shape {} but the config implies {}", name, shape_str(e->shape),
              shape_str(shape));
    bool ok = false;
    switch (kind) {
      case TensorKind::Fp8Matrix: ok = e->dtype == DType::F8_E4M3; break;
      case TensorKind::Bf16Matrix: ok = e->dtype == DType::BF16; break;
      // Norm and LayerNorm vectors: BF16 in DeepSeek's files; F32 accepted (k_norm's dtype is unverified).
      case TensorKind::NormVector:
      case TensorKind::F32Vector: ok = e->dtype == DType::BF16 || e->dtype == DType::F32; break;
    }
    DSA_CHECK(ok, "tensor {} has dtype {}, expected {}", name, dtype_name(e->dtype),
              kind == TensorKind::NormVector || kind == TensorKind::F32Vector ? "F32 or BF16" : dtype_name(want));
    used.insert(name);
    Tensor t = ckpt_.get(name);
    if (kind == TensorKind::Fp8Matrix || kind == TensorKind::Bf16Matrix) check_finite_weights(name, *e);
    if (kind == TensorKind::NormVector || kind == TensorKind::F32Vector) {
      t = to_f32_vector(t);
      const float* v = t.ptr<float>();
      for (int64_t i = 0; i < t.numel(); ++i)
        DSA_CHECK(std::isfinite(v[i]), "tensor {}: element {} is not finite", name, i);
    }
    return t;
  }

  Tensor fetch_exact(const std::string& name, const Shape& shape, DType dtype) {
    const TensorEntry* e = ckpt_.find(name);
    DSA_CHECK(e != nullptr, "missing tensor {} (expected {} {})", name, dtype_name(dtype), shape_str(shape));
    DSA_CHECK(e->shape == shape, "tensor {} has shape {} but the config implies {}", name, shape_str(e->shape),
              shape_str(shape));
    DSA_CHECK(e->dtype == dtype, "tensor {} has dtype {}, expected {}", name, dtype_name(e->dtype), dtype_name(dtype));
    used.insert(name);
    return ckpt_.get(name);
  }

  const Checkpoint& ckpt_;
  std::unordered_map<std::string, TensorSpec> specs_;
};

}  // namespace

// NaN in an FP8 e4m3fn matrix (0x7f / 0xff; the format has no infinity) or NaN/inf in a BF16 one
// would poison every output (greedy decoding then emits token 0 forever): refused at load, with
// the first bad element. One pass over the bytes, split over the pool.
void check_finite_weights(const std::string& name, const TensorEntry& e) {
  const bool is_fp8 = e.dtype == DType::F8_E4M3;
  DSA_CHECK(is_fp8 || e.dtype == DType::BF16, "internal: finiteness scan of {} {}", name, dtype_name(e.dtype));
  const int64_t n = int64_t(is_fp8 ? e.nbytes : e.nbytes / 2), chunk = int64_t(1) << 22;
  const int64_t chunks = (n + chunk - 1) / chunk;
  std::vector<int64_t> first(size_t(chunks), -1);
  parallel_for(chunks, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t i0 = c * chunk, i1 = std::min(n, i0 + chunk);
      if (is_fp8) {
        const uint8_t* p = e.data;
        for (int64_t i = i0; i < i1; ++i)
          if ((p[i] & 0x7f) == 0x7f) {
            first[size_t(c)] = i;
            break;
          }
      } else {
        for (int64_t i = i0; i < i1; ++i) {
          uint16_t v;
          std::memcpy(&v, e.data + 2 * i, 2);
          if ((v & 0x7f80) == 0x7f80) {
            first[size_t(c)] = i;
            break;
          }
        }
      }
    }
  });
  for (int64_t f : first)
    DSA_CHECK(f < 0, "tensor {} ({}, {}): element {} is not finite (NaN{}); the checkpoint is corrupt", name,
              dtype_name(e.dtype), e.file, f, is_fp8 ? "" : " or infinity");
}

namespace {

Tensor dequant_bf16(const Fp8Matrix& m) {
  Tensor r = Tensor::empty(DType::BF16, {m.out, m.in});
  const int64_t kb = (m.in + 127) / 128;
  for (int64_t i = 0; i < m.out; ++i)
    for (int64_t j = 0; j < m.in; ++j) {
      const float s = m.s.ptr<float>()[(i / 128) * kb + j / 128];
      r.ptr<bf16>()[i * m.in + j] = f32_to_bf16(kFp8Table[m.w.ptr<uint8_t>()[i * m.in + j]] * s);
    }
  return r;
}

}  // namespace

void for_each_tensor(ModelWeights& w, const std::function<void(Tensor&)>& fn) {
  auto mat = [&](Fp8Matrix& m) { fn(m.w); fn(m.s); };
  auto mlp = [&](Mlp& m) { mat(m.gate); mat(m.up); mat(m.down); };
  fn(w.embed);
  fn(w.final_norm);
  fn(w.lm_head);
  auto layer = [&](LayerWeights& l) {
    for (Tensor* t : {&l.attn_norm, &l.ffn_norm, &l.q_norm, &l.kv_norm, &l.wkv_b_bf16, &l.idx_k_norm_w,
                      &l.idx_k_norm_b, &l.idx_weights_proj})
      fn(*t);
    for (Fp8Matrix* m : {&l.q_a, &l.q_b, &l.kv_a, &l.kv_b, &l.o, &l.idx_wq_b, &l.idx_wk}) mat(*m);
    if (!l.moe) {
      mlp(l.dense);
    } else {
      fn(l.gate_w);
      fn(l.gate_bias);
      for (Mlp& e : l.experts) mlp(e);
      if (l.has_shared) mlp(l.shared);
    }
  };
  for (LayerWeights& l : w.layers) layer(l);
  for (MtpWeights& m : w.mtp) {
    for (Tensor* t : {&m.enorm, &m.hnorm, &m.head_norm, &m.eh_proj}) fn(*t);
    layer(m.layer);
  }
}

Tensor load_dequantised(const Checkpoint& ckpt, const ModelConfig& cfg, const std::string& name) {
  Loader L(ckpt, cfg);
  const TensorSpec* spec = L.spec(name);
  DSA_CHECK(spec, "internal: {} is not in the tensor table", name);
  Tensor r = Tensor::empty(DType::F32, spec->shape);
  float* o = r.ptr<float>();
  if (spec->kind == TensorKind::Fp8Matrix) {
    const Fp8Matrix m = L.fp8(name);
    const int64_t kb = ops::ceil_div(m.in, 128);
    for (int64_t i = 0; i < m.out; ++i)
      for (int64_t j = 0; j < m.in; ++j)
        o[i * m.in + j] = kFp8Table[m.w.ptr<uint8_t>()[i * m.in + j]] * m.s.ptr<float>()[(i / 128) * kb + j / 128];
  } else {
    const Tensor t = L.get(name);  // norm / F32 vectors come back as F32
    if (t.dtype == DType::F32) std::copy(t.ptr<float>(), t.ptr<float>() + t.numel(), o);
    else for (int64_t i = 0; i < t.numel(); ++i) o[i] = bf16_to_f32(t.ptr<bf16>()[i]);
  }
  return r;
}

LayerWeights assemble_layer(const ModelConfig& cfg, int64_t i, bool mtp, const WeightGetter& g) {
  const std::string p = fmt::format("model.layers.{}.", i);
  LayerWeights l;
  l.attn_norm = g.tensor(p + "input_layernorm.weight");
  l.ffn_norm = g.tensor(p + "post_attention_layernorm.weight");
  l.q_a = g.fp8(p + "self_attn.q_a_proj.weight");
  l.q_norm = g.tensor(p + "self_attn.q_a_layernorm.weight");
  l.q_b = g.fp8(p + "self_attn.q_b_proj.weight");
  l.kv_a = g.fp8(p + "self_attn.kv_a_proj_with_mqa.weight");
  l.kv_norm = g.tensor(p + "self_attn.kv_a_layernorm.weight");
  l.kv_b = g.fp8(p + "self_attn.kv_b_proj.weight");
  l.o = g.fp8(p + "self_attn.o_proj.weight");
  l.wkv_b_bf16 = g.dequant_bf16(l.kv_b);
  l.idx_wq_b = g.fp8(p + "self_attn.indexer.wq_b.weight");
  l.idx_wk = g.fp8(p + "self_attn.indexer.wk.weight");
  l.idx_k_norm_w = g.tensor(p + "self_attn.indexer.k_norm.weight");
  l.idx_k_norm_b = g.tensor(p + "self_attn.indexer.k_norm.bias");
  l.idx_weights_proj = g.tensor(p + "self_attn.indexer.weights_proj.weight");
  l.moe = mtp || cfg.is_moe_layer(i);
  auto mlp = [&](const std::string& q) {
    return Mlp{g.fp8(q + "gate_proj.weight"), g.fp8(q + "up_proj.weight"), g.fp8(q + "down_proj.weight")};
  };
  if (!l.moe) {
    l.dense = mlp(p + "mlp.");
  } else {
    l.gate_w = g.tensor(p + "mlp.gate.weight");
    l.gate_bias = g.tensor(p + "mlp.gate.e_score_correction_bias");
    for (int64_t e = 0; e < cfg.n_routed_experts; ++e) l.experts.push_back(mlp(p + fmt::format("mlp.experts.{}.", e)));
    l.has_shared = cfg.n_shared_experts > 0;
    if (l.has_shared) l.shared = mlp(p + "mlp.shared_experts.");
  }
  return l;
}

ModelWeights load_weights(const Checkpoint& ckpt, const ModelConfig& cfg,
                          const std::function<void(const std::string&)>& log) {
  Loader L(ckpt, cfg);
  ModelWeights w;
  w.embed = L.get("model.embed_tokens.weight");
  w.final_norm = L.get("model.norm.weight");
  w.lm_head = L.get("lm_head.weight");
  const WeightGetter g{[&](const std::string& n) { return L.get(n); }, [&](const std::string& n) { return L.fp8(n); },
                      [](const Fp8Matrix& m) { return dequant_bf16(m); }};
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) w.layers.push_back(assemble_layer(cfg, i, false, g));
  w.skipped = L.check_unexpected(L.used);
  if (!w.skipped.empty())
    log(fmt::format("skipped {} MTP tensors (model.layers.{}.*): speculative decoding is not implemented",
                    w.skipped.size(), cfg.num_hidden_layers));
  return w;
}

}  // namespace dsa
