// Trainable parameters: masters from the tensor table or a checkpoint, forward weights rounded
// from them through the backend's weight_quant / convert ops.
#include "model/params.h"

#include <fmt/format.h>

#include "ops/grad.h"

namespace dsa {

bool is_shared_mtp_tensor(const ModelConfig& cfg, const std::string& name) {
  for (int64_t m = 0; m < cfg.num_nextn_predict_layers; ++m) {
    const std::string p = fmt::format("model.layers.{}.", cfg.num_hidden_layers + m);
    if (name == p + "embed_tokens.weight" || name == p + "shared_head.head.weight") return true;
  }
  return false;
}

Params::Params(Backend& be, const ModelConfig& cfg, bool mtp) : be_(be), cfg_(cfg), mtp_(mtp && cfg.num_nextn_predict_layers > 0) {
  DSA_CHECK(be.ops().grad, "the {} backend has no training ops", be.ops().name);
  DSA_CHECK(cfg.num_nextn_predict_layers <= 1, "training supports MTP depth 1, the config has {}",
            cfg.num_nextn_predict_layers);
  for (const TensorSpec& s : tensor_table(cfg, mtp_)) {
    if (is_shared_mtp_tensor(cfg, s.name)) continue;
    Param p;
    p.spec = s;
    p.master = be.alloc(DType::F32, s.shape);
    p.grad = be.alloc(DType::F32, s.shape);
    be.ops().mem.fill(p.master.data, 0, p.master.nbytes());
    be.ops().mem.fill(p.grad.data, 0, p.grad.nbytes());
    p.decay = s.kind == TensorKind::Fp8Matrix || s.kind == TensorKind::Bf16Matrix;
    p.gradient = s.name.find("e_score_correction_bias") == std::string::npos;
    index_[s.name] = params_.size();
    params_.push_back(std::move(p));
  }
}

void Params::load(const Checkpoint& ckpt) {
  for (Param& p : params_) {
    const Tensor host = load_dequantised(ckpt, cfg_, p.spec.name);
    be_.ops().mem.copy(p.master.data, host.data, host.nbytes(), ops::CopyKind::kHostToDevice);
  }
  be_.ops().mem.sync();
}

void Params::set_master(const std::string& name, const float* host) {
  Param& p = at(name);
  be_.ops().mem.copy(p.master.data, host, p.master.nbytes(), ops::CopyKind::kHostToDevice);
  be_.ops().mem.sync();
}

Param* Params::find(const std::string& name) {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &params_[it->second];
}

Param& Params::at(const std::string& name) {
  Param* p = find(name);
  DSA_CHECK(p, "no parameter named {}", name);
  return *p;
}

int64_t Params::count() const {
  int64_t n = 0;
  for (const Param& p : params_) n += p.master.numel();
  return n;
}

void Params::zero_grad() {
  for (Param& p : params_) be_.ops().mem.fill(p.grad.data, 0, p.grad.nbytes());
}

Params::Stored Params::stored(const Param& p) const {
  const ops::OpTable& ops = be_.ops();
  Stored r;
  const int64_t N = p.master.numel();
  switch (p.spec.kind) {
    case TensorKind::F32Vector:
      r.t = be_.alloc(DType::F32, p.spec.shape);
      ops.mem.copy(r.t.data, p.master.data, r.t.nbytes(), ops::CopyKind::kDeviceToDevice);
      break;
    case TensorKind::Bf16Matrix:
    case TensorKind::NormVector:
      r.t = be_.alloc(DType::BF16, p.spec.shape);
      ops.convert({p.master.data, r.t.data, N, false});
      break;
    case TensorKind::Fp8Matrix:
      r.t = be_.alloc(DType::F8_E4M3, p.spec.shape);
      r.scale = be_.alloc(DType::F32, p.spec.scale_shape());
      ops.grad->weight_quant({p.master.ptr<float>(), r.t.ptr<fp8>(), r.scale.ptr<float>(), p.spec.shape[0],
                              p.spec.shape[1]});
      break;
  }
  return r;
}

ModelWeights Params::forward_weights() const {
  const ops::OpTable& ops = be_.ops();
  const ops::GradTable& g = *ops.grad;
  auto param = [&](const std::string& n) -> const Param& {
    auto it = index_.find(n);
    DSA_CHECK(it != index_.end(), "internal: no parameter {}", n);
    return params_[it->second];
  };
  // As the checkpoint stores it, then as the loader presents it (norm vectors in F32).
  auto tensor = [&](const std::string& n) {
    const Param& p = param(n);
    Stored st = stored(p);
    if (p.spec.kind != TensorKind::NormVector) return st.t;
    Tensor t = be_.alloc(DType::F32, p.spec.shape);
    ops.convert({st.t.data, t.data, p.master.numel(), true});
    return t;
  };
  auto fp8m = [&](const std::string& n) {
    const Param& p = param(n);
    Stored st = stored(p);
    return Fp8Matrix{st.t, st.scale, p.spec.shape[0], p.spec.shape[1]};
  };
  auto dequant_bf16 = [&](const Fp8Matrix& m) {
    Tensor t = be_.alloc(DType::BF16, {m.out, m.in});
    g.dequant({m.w.ptr<fp8>(), m.s.ptr<float>(), t.data, m.out, m.in, ops::kBlock, true});
    return t;
  };
  const WeightGetter get{tensor, fp8m, dequant_bf16};
  ModelWeights w;
  w.embed = tensor("model.embed_tokens.weight");
  w.final_norm = tensor("model.norm.weight");
  w.lm_head = tensor("lm_head.weight");
  for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i) w.layers.push_back(assemble_layer(cfg_, i, false, get));
  if (mtp_) {
    const int64_t n = cfg_.num_hidden_layers;
    const std::string p = fmt::format("model.layers.{}.", n);
    MtpWeights m;
    m.enorm = tensor(p + "enorm.weight");
    m.hnorm = tensor(p + "hnorm.weight");
    m.head_norm = tensor(p + "shared_head.norm.weight");
    m.eh_proj = tensor(p + "eh_proj.weight");
    m.layer = assemble_layer(cfg_, n, true, get);
    w.mtp.push_back(std::move(m));
  }
  return w;
}

}  // namespace dsa
