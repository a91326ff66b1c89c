// DeepSeek-V3.2 (`model_type: deepseek_v32`) configuration: every config.json key the model uses,
// parsed and checked, plus derived constants (spec §1).
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace dsa {

struct ModelConfig {
  std::string model_type;
  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0, moe_intermediate_size = 0;
  int64_t num_hidden_layers = 0, num_nextn_predict_layers = 0;
  int64_t num_attention_heads = 0, num_key_value_heads = 0;
  int64_t q_lora_rank = 0, kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0, qk_rope_head_dim = 0, v_head_dim = 0;
  int64_t n_routed_experts = 0, n_shared_experts = 0, num_experts_per_tok = 0;
  int64_t n_group = 1, topk_group = 1;
  std::string topk_method, scoring_func;
  bool norm_topk_prob = true;
  double routed_scaling_factor = 1.0;
  int64_t first_k_dense_replace = 0, moe_layer_freq = 1;
  int64_t index_n_heads = 0, index_head_dim = 0, index_topk = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000;
  // rope_scaling (YaRN)
  std::string rope_type;  // "yarn" or "" (none)
  double rope_factor = 1, beta_fast = 32, beta_slow = 1, mscale = 1, mscale_all_dim = 1;
  int64_t original_max_position_embeddings = 0;
  int64_t bos_token_id = 0, eos_token_id = 1;
  bool tie_word_embeddings = false;
  // quantization_config
  bool fp8 = false;
  std::string scale_fmt;  // "ue8m0"
  int64_t weight_block = 128;

  // Derived.
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool is_moe_layer(int64_t i) const {
    return n_routed_experts > 0 && i >= first_k_dense_replace && i % moe_layer_freq == 0;
  }
  double softmax_scale() const;  // qk_head_dim^-0.5 * mscale^2 (YaRN)
  bool yarn() const { return rope_type == "yarn" && rope_factor > 1; }

  static ModelConfig from_json(const nlohmann::json& j);  // throws dsa::Error naming the key
  static ModelConfig load(const std::string& config_json_path);
  void validate() const;                                   // invariants; throws dsa::Error
  nlohmann::json to_json() const;                          // HF-style config.json
};

}  // namespace dsa
