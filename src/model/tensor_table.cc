// V3.2 tensor table (spec §2), derived from the config.
#include "model/tensor_table.h"

#include <fmt/format.h>

#include "ops/ops.h"

namespace dsa {

std::string TensorSpec::scale_name() const {
  const std::string suffix = ".weight";
  std::string base = name.substr(0, name.size() - suffix.size());
  return base + ".weight_scale_inv";
}

Shape TensorSpec::scale_shape() const {
  return {ops::ceil_div(shape[0], 128), ops::ceil_div(shape[1], 128)};
}

DType TensorSpec::dtype() const {
  switch (kind) {
    case TensorKind::Fp8Matrix: return DType::F8_E4M3;
    case TensorKind::Bf16Matrix: return DType::BF16;
    case TensorKind::NormVector: return DType::BF16;
    case TensorKind::F32Vector: return DType::F32;
  }
  return DType::F32;
}

namespace {

void add_layer(std::vector<TensorSpec>& t, const ModelConfig& c, int64_t i, bool mtp) {
  const std::string p = fmt::format("model.layers.{}.", i);
  auto add = [&](const std::string& n, TensorKind k, Shape s) { t.push_back({p + n, k, std::move(s), mtp}); };
  const int64_t H = c.hidden_size, nh = c.num_attention_heads;
  add("input_layernorm.weight", TensorKind::NormVector, {H});
  add("post_attention_layernorm.weight", TensorKind::NormVector, {H});
  add("self_attn.q_a_proj.weight", TensorKind::Fp8Matrix, {c.q_lora_rank, H});
  add("self_attn.q_a_layernorm.weight", TensorKind::NormVector, {c.q_lora_rank});
  add("self_attn.q_b_proj.weight", TensorKind::Fp8Matrix, {nh * c.qk_head_dim(), c.q_lora_rank});
  add("self_attn.kv_a_proj_with_mqa.weight", TensorKind::Fp8Matrix, {c.kv_lora_rank + c.qk_rope_head_dim, H});
  add("self_attn.kv_a_layernorm.weight", TensorKind::NormVector, {c.kv_lora_rank});
  add("self_attn.kv_b_proj.weight", TensorKind::Fp8Matrix,
      {nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank});
  add("self_attn.o_proj.weight", TensorKind::Fp8Matrix, {H, nh * c.v_head_dim});
  add("self_attn.indexer.wq_b.weight", TensorKind::Fp8Matrix, {c.index_n_heads * c.index_head_dim, c.q_lora_rank});
  add("self_attn.indexer.wk.weight", TensorKind::Fp8Matrix, {c.index_head_dim, H});
  add("self_attn.indexer.k_norm.weight", TensorKind::F32Vector, {c.index_head_dim});
  add("self_attn.indexer.k_norm.bias", TensorKind::F32Vector, {c.index_head_dim});
  add("self_attn.indexer.weights_proj.weight", TensorKind::Bf16Matrix, {c.index_n_heads, H});
  if (!c.is_moe_layer(i) && !mtp) {
    add("mlp.gate_proj.weight", TensorKind::Fp8Matrix, {c.intermediate_size, H});
    add("mlp.up_proj.weight", TensorKind::Fp8Matrix, {c.intermediate_size, H});
    add("mlp.down_proj.weight", TensorKind::Fp8Matrix, {H, c.intermediate_size});
    return;
  }
  const int64_t I = c.moe_intermediate_size;
  add("mlp.gate.weight", TensorKind::Bf16Matrix, {c.n_routed_experts, H});
  add("mlp.gate.e_score_correction_bias", TensorKind::F32Vector, {c.n_routed_experts});
  for (int64_t e = 0; e < c.n_routed_experts; ++e) {
    const std::string ep = fmt::format("mlp.experts.{}.", e);
    add(ep + "gate_proj.weight", TensorKind::Fp8Matrix, {I, H});
    add(ep + "up_proj.weight", TensorKind::Fp8Matrix, {I, H});
    add(ep + "down_proj.weight", TensorKind::Fp8Matrix, {H, I});
  }
  if (c.n_shared_experts > 0) {
    const int64_t SI = I * c.n_shared_experts;
    add("mlp.shared_experts.gate_proj.weight", TensorKind::Fp8Matrix, {SI, H});
    add("mlp.shared_experts.up_proj.weight", TensorKind::Fp8Matrix, {SI, H});
    add("mlp.shared_experts.down_proj.weight", TensorKind::Fp8Matrix, {H, SI});
  }
}

}  // namespace

int64_t layer_tensor_count(const ModelConfig& c, int64_t layer, bool mtp) {
  int64_t n = 14 + 7;  // attention + indexer specs, 7 of them FP8 (one scale each)
  if (!c.is_moe_layer(layer) && !mtp) return n + 3 * 2;
  n += 2 + c.n_routed_experts * 3 * 2;
  if (c.n_shared_experts > 0) n += 3 * 2;
  return n + (mtp ? 6 : 0);
}

int64_t main_tensor_count(const ModelConfig& c) {
  int64_t n = 3;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) n += layer_tensor_count(c, i, false);
  return n;
}

std::vector<TensorSpec> tensor_table(const ModelConfig& c, bool include_mtp) {
  std::vector<TensorSpec> t;
  t.push_back({"model.embed_tokens.weight", TensorKind::Bf16Matrix, {c.vocab_size, c.hidden_size}});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) add_layer(t, c, i, false);
  t.push_back({"model.norm.weight", TensorKind::NormVector, {c.hidden_size}});
  t.push_back({"lm_head.weight", TensorKind::Bf16Matrix, {c.vocab_size, c.hidden_size}});
  if (include_mtp) {
    for (int64_t m = 0; m < c.num_nextn_predict_layers; ++m) {
      const int64_t i = c.num_hidden_layers + m;
      const std::string p = fmt::format("model.layers.{}.", i);
      t.push_back({p + "embed_tokens.weight", TensorKind::Bf16Matrix, {c.vocab_size, c.hidden_size}, true});
      t.push_back({p + "enorm.weight", TensorKind::NormVector, {c.hidden_size}, true});
      t.push_back({p + "hnorm.weight", TensorKind::NormVector, {c.hidden_size}, true});
      t.push_back({p + "eh_proj.weight", TensorKind::Bf16Matrix, {c.hidden_size, 2 * c.hidden_size}, true});
      t.push_back({p + "shared_head.norm.weight", TensorKind::NormVector, {c.hidden_size}, true});
      t.push_back({p + "shared_head.head.weight", TensorKind::Bf16Matrix, {c.vocab_size, c.hidden_size}, true});
      add_layer(t, c, i, true);
    }
  }
  return t;
}

}  // namespace dsa
