// Deterministic checkpoint generator. Values come from a counter-based generator (splitmix64 of
// seed, tensor name and element index) and Irwin-Hall normals, so files are bit-identical on any
// machine. FP8 matrices get per-128x128-block scales amax/448 like DeepSeek's quantiser.
#include "model/make_model.h"

#include <algorithm>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/hash.h"
#include "base/numeric.h"
#include "io/safetensors.h"
#include "model/tensor_table.h"

namespace dsa {

namespace {

// FNV-1a from a basis of its own (FNV's offset basis with its last digit missing): every
// make-model file, and so the golden fixtures, depend on it; never change it.
uint64_t hash_name(const std::string& s) { return fnv1a_bytes(1469598103934665603ull, s); }

// Approximately N(0,1): Irwin-Hall sum of 4 uniforms (24-bit each), centred and scaled.
struct Gen {
  uint64_t state;
  float uniform() {
    state = splitmix64(state);
    return float(state >> 40) * (1.0f / 16777216.0f);
  }
  float normal() {
    const float s = uniform() + uniform() + uniform() + uniform();
    return (s - 2.0f) * 1.7320508f;
  }
};

Tensor gen_tensor(const TensorSpec& spec, uint64_t seed, Tensor* scale) {
  Gen g{splitmix64(seed ^ hash_name(spec.name))};
  const int64_t n = shape_numel(spec.shape);
  const std::string& nm = spec.name;
  auto ends_with = [&](const char* suf) {
    const size_t L = std::strlen(suf);
    return nm.size() >= L && nm.compare(nm.size() - L, L, suf) == 0;
  };
  switch (spec.kind) {
    case TensorKind::NormVector: {
      Tensor t = Tensor::empty(DType::BF16, spec.shape);
      for (int64_t i = 0; i < n; ++i) t.ptr<bf16>()[i] = f32_to_bf16(1.0f + 0.1f * g.normal());
      return t;
    }
    case TensorKind::F32Vector: {
      Tensor t = Tensor::empty(DType::F32, spec.shape);
      float sd = 0.1f, mean = 0.0f;
      if (ends_with("k_norm.weight")) mean = 1.0f;
      if (ends_with("e_score_correction_bias")) sd = 0.05f;
      for (int64_t i = 0; i < n; ++i) t.ptr<float>()[i] = mean + sd * g.normal();
      return t;
    }
    case TensorKind::Bf16Matrix: {
      Tensor t = Tensor::empty(DType::BF16, spec.shape);
      // Embeddings ~N(0,1); projections ~N(0, 1/in).
      const bool embed = ends_with("embed_tokens.weight");
      const float sd = embed ? 1.0f : 1.0f / std::sqrt(float(spec.shape[1]));
      for (int64_t i = 0; i < n; ++i) t.ptr<bf16>()[i] = f32_to_bf16(sd * g.normal());
      return t;
    }
    case TensorKind::Fp8Matrix: {
      const int64_t R = spec.shape[0], C = spec.shape[1];
      const float sd = 1.0f / std::sqrt(float(C));
      std::vector<float> v(size_t(R) * C);
      for (auto& x : v) x = sd * g.normal();
      Tensor t = Tensor::empty(DType::F8_E4M3, spec.shape);
      Shape ss = spec.scale_shape();
      *scale = Tensor::empty(DType::F32, ss);
      for (int64_t br = 0; br < ss[0]; ++br)
        for (int64_t bc = 0; bc < ss[1]; ++bc) {
          const int64_t r0 = br * 128, r1 = std::min(R, r0 + 128), c0 = bc * 128, c1 = std::min(C, c0 + 128);
          float amax = 0;
          for (int64_t r = r0; r < r1; ++r)
            for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(v[r * C + c]));
          const float s = std::max(amax, 1e-12f) / 448.0f;
          scale->ptr<float>()[br * ss[1] + bc] = s;
          for (int64_t r = r0; r < r1; ++r)
            for (int64_t c = c0; c < c1; ++c) t.ptr<uint8_t>()[r * C + c] = f32_to_fp8(v[r * C + c] / s);
        }
      return t;
    }
  }
  DSA_FAIL("unreachable");
}

ModelConfig base_v32() {
  ModelConfig c;
  c.model_type = "deepseek_v32";
  c.vocab_size = 129280;
  c.hidden_size = 7168;
  c.intermediate_size = 18432;
  c.moe_intermediate_size = 2048;
  c.num_hidden_layers = 61;
  c.num_nextn_predict_layers = 1;
  c.num_attention_heads = c.num_key_value_heads = 128;
  c.q_lora_rank = 1536;
  c.kv_lora_rank = 512;
  c.qk_nope_head_dim = 128;
  c.qk_rope_head_dim = 64;
  c.v_head_dim = 128;
  c.n_routed_experts = 256;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 8;
  c.n_group = 8;
  c.topk_group = 4;
  c.topk_method = "noaux_tc";
  c.scoring_func = "sigmoid";
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  c.first_k_dense_replace = 3;
  c.moe_layer_freq = 1;
  c.index_n_heads = 64;
  c.index_head_dim = 128;
  c.index_topk = 2048;
  c.max_position_embeddings = 163840;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000;
  c.rope_type = "yarn";
  c.rope_factor = 40;
  c.original_max_position_embeddings = 4096;
  c.beta_fast = 32;
  c.beta_slow = 1;
  c.mscale = 1;
  c.mscale_all_dim = 1;
  c.bos_token_id = 0;
  c.eos_token_id = 1;
  c.fp8 = true;
  c.scale_fmt = "ue8m0";
  return c;
}

}  // namespace

std::vector<std::string> preset_names() { return {"micro", "tiny", "demo", "v32-layer"}; }

ModelConfig preset_config(const std::string& preset) {
  ModelConfig c = base_v32();
  if (preset == "v32-layer") {
    // Real per-layer dimensions; 2 layers: one dense (layer 0), one MoE (layer 1).
    c.num_hidden_layers = 2;
    c.first_k_dense_replace = 1;
  } else if (preset == "tiny" || preset == "demo") {
    // Full V3.2 structure at toy width: 1 dense + 2 MoE layers, grouped routing, partial
    // 128-blocks (q_lora_rank and moe_intermediate_size 192), top-k 32 so a few hundred tokens
    // are truly sparse. demo = tiny with DeepSeek's real vocabulary (tokenizer-compatible).
    c.vocab_size = preset == "demo" ? 129280 : 1000;
    c.hidden_size = 256;
    c.intermediate_size = 384;
    c.moe_intermediate_size = 192;
    c.num_hidden_layers = 3;
    c.num_attention_heads = c.num_key_value_heads = 4;
    c.q_lora_rank = 192;
    c.kv_lora_rank = 128;
    c.n_routed_experts = 16;
    c.num_experts_per_tok = 4;
    c.n_group = 4;
    c.topk_group = 2;
    c.first_k_dense_replace = 1;
    c.index_n_heads = 4;
    c.index_topk = 32;
  } else if (preset == "micro") {
    // The training tests' model: every V3.2 part (dense + MoE layer, grouped routing, shared
    // expert, indexer with top-k 8, MTP) at the smallest width the kernels take, so gradient
    // fixtures of every parameter stay small. Partial 128-blocks: q_lora 96, kv_lora 64.
    c.vocab_size = 512;
    c.hidden_size = 128;
    c.intermediate_size = 192;
    c.moe_intermediate_size = 64;
    c.num_hidden_layers = 2;
    c.num_attention_heads = c.num_key_value_heads = 2;
    c.q_lora_rank = 96;
    c.kv_lora_rank = 64;
    c.qk_nope_head_dim = 64;
    c.v_head_dim = 64;
    c.n_routed_experts = 8;
    c.num_experts_per_tok = 2;
    c.n_group = 4;
    c.topk_group = 2;
    c.first_k_dense_replace = 1;
    c.index_n_heads = 2;
    c.index_topk = 8;
  } else {
    DSA_FAIL("unknown preset \"{}\" (known: micro, tiny, demo, v32-layer)", preset);
  }
  c.validate();
  return c;
}

void write_model_config(const std::string& dir, const ModelConfig& c) {
  std::ofstream f(dir + "/config.json");
  DSA_CHECK(f.good(), "cannot write {}/config.json", dir);
  f << c.to_json().dump(2) << "\n";
  std::ofstream g(dir + "/generation_config.json");
  g << nlohmann::json{{"bos_token_id", c.bos_token_id}, {"eos_token_id", c.eos_token_id},
                      {"do_sample", true}, {"temperature", 1.0}, {"top_p", 0.95}}.dump(2) << "\n";
  DSA_CHECK(f.good() && g.good(), "write error in {}", dir);
}

int64_t make_model(const MakeModelOptions& opt) {
  ModelConfig c = opt.config ? *opt.config : preset_config(opt.preset);
  if (opt.layers > 0) {
    c.num_hidden_layers = opt.layers;
    c.first_k_dense_replace = std::min(c.first_k_dense_replace, opt.layers);
  }
  if (!opt.mtp) c.num_nextn_predict_layers = 0;
  c.validate();
  DSA_CHECK(!opt.out_dir.empty(), "make-model: an output directory is required");
  DSA_CHECK(opt.shards >= 1 && opt.shards <= 1000, "make-model: --shards must be in [1, 1000]");
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(opt.out_dir, ec);
  DSA_CHECK(!ec, "cannot create directory {}: {}", opt.out_dir, ec.message());
  write_model_config(opt.out_dir, c);
  const auto specs = tensor_table(c, c.num_nextn_predict_layers > 0);
  // Split the table into shards of roughly equal byte size, in table order.
  int64_t total = 0;
  for (auto& s : specs) total += shape_numel(s.shape) * int64_t(dtype_size(s.dtype()));
  const int64_t per_shard = total / opt.shards + 1;
  nlohmann::json weight_map = nlohmann::json::object();
  size_t next = 0;
  int64_t written = 0;
  for (int sh = 0; sh < opt.shards; ++sh) {
    const std::string file = opt.shards == 1 ? "model.safetensors"
                                             : fmt::format("model-{:05d}-of-{:05d}.safetensors", sh + 1, opt.shards);
    std::vector<std::pair<std::string, Tensor>> tensors;
    int64_t bytes = 0;
    while (next < specs.size() && (bytes < per_shard || sh == opt.shards - 1)) {
      const TensorSpec& s = specs[next++];
      Tensor scale;
      Tensor t = gen_tensor(s, opt.seed, &scale);
      bytes += int64_t(t.nbytes());
      tensors.emplace_back(s.name, t);
      weight_map[s.name] = file;
      if (s.kind == TensorKind::Fp8Matrix) {
        tensors.emplace_back(s.scale_name(), scale);
        weight_map[s.scale_name()] = file;
        bytes += int64_t(scale.nbytes());
      }
    }
    write_safetensors(opt.out_dir + "/" + file, tensors, {{"format", "pt"}, {"generator", "dsa make-model " + opt.preset}});
    written += bytes;
  }
  if (opt.shards > 1) {
    std::ofstream f(opt.out_dir + "/model.safetensors.index.json");
    f << nlohmann::json{{"metadata", {{"total_size", written}}}, {"weight_map", weight_map}}.dump(2) << "\n";
    DSA_CHECK(f.good(), "cannot write {}/model.safetensors.index.json", opt.out_dir);
  } else {
    fs::remove(opt.out_dir + "/model.safetensors.index.json", ec);
  }
  return written;
}

}  // namespace dsa
