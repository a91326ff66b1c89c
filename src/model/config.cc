// config.json reader for deepseek_v32 with invariant checks.
#include "model/config.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "base/error.h"
#include "base/files.h"
#include "io/json.h"

namespace dsa {

namespace {

using json = nlohmann::json;

// Integers must be JSON integers (1.5 or 2.0 for a layer count is an error, not truncated);
// floats accept integers; strings and bools must be exactly those.
template <class T>
T convert(const json& v, const char* key) {
  if constexpr (std::is_same_v<T, int64_t>) {
    DSA_CHECK(v.is_number_integer() && !(v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)),
              "config.json: key \"{}\" has the wrong type: must be an integer, got {} ({})", key, json_excerpt(v), v.type_name());
    return v.get<int64_t>();
  } else if constexpr (std::is_same_v<T, double>) {
    DSA_CHECK(v.is_number(), "config.json: key \"{}\" has the wrong type: must be a number, got {}", key, v.type_name());
    return v.get<double>();
  } else if constexpr (std::is_same_v<T, bool>) {
    DSA_CHECK(v.is_boolean(), "config.json: key \"{}\" has the wrong type: must be a boolean, got {}", key, v.type_name());
    return v.get<bool>();
  } else {
    DSA_CHECK(v.is_string(), "config.json: key \"{}\" has the wrong type: must be a string, got {}", key, v.type_name());
    return v.get<std::string>();
  }
}

template <class T>
T get_req(const json& j, const char* key) {
  DSA_CHECK(j.contains(key), "config.json: missing required key \"{}\"", key);
  return convert<T>(j.at(key), key);
}

template <class T>
T get_opt(const json& j, const char* key, T def) {
  if (!j.contains(key) || j.at(key).is_null()) return def;
  return convert<T>(j.at(key), key);
}

}  // namespace

double ModelConfig::softmax_scale() const {
  double s = 1.0 / std::sqrt(double(qk_head_dim()));
  if (yarn() && mscale_all_dim > 0) {
    const double m = 0.1 * mscale_all_dim * std::log(rope_factor) + 1.0;
    s *= m * m;
  }
  return s;
}

ModelConfig ModelConfig::from_json(const json& j) {
  DSA_CHECK(j.is_object(), "config.json: top level is not an object");
  ModelConfig c;
  c.model_type = get_req<std::string>(j, "model_type");
  c.vocab_size = get_req<int64_t>(j, "vocab_size");
  c.hidden_size = get_req<int64_t>(j, "hidden_size");
  c.intermediate_size = get_req<int64_t>(j, "intermediate_size");
  c.moe_intermediate_size = get_opt<int64_t>(j, "moe_intermediate_size", 0);
  c.num_hidden_layers = get_req<int64_t>(j, "num_hidden_layers");
  c.num_nextn_predict_layers = get_opt<int64_t>(j, "num_nextn_predict_layers", 0);
  c.num_attention_heads = get_req<int64_t>(j, "num_attention_heads");
  c.num_key_value_heads = get_opt<int64_t>(j, "num_key_value_heads", c.num_attention_heads);
  c.q_lora_rank = get_req<int64_t>(j, "q_lora_rank");
  c.kv_lora_rank = get_req<int64_t>(j, "kv_lora_rank");
  c.qk_nope_head_dim = get_req<int64_t>(j, "qk_nope_head_dim");
  c.qk_rope_head_dim = get_req<int64_t>(j, "qk_rope_head_dim");
  c.v_head_dim = get_req<int64_t>(j, "v_head_dim");
  c.n_routed_experts = get_opt<int64_t>(j, "n_routed_experts", 0);
  c.n_shared_experts = get_opt<int64_t>(j, "n_shared_experts", 0);
  c.num_experts_per_tok = get_opt<int64_t>(j, "num_experts_per_tok", 0);
  c.n_group = get_opt<int64_t>(j, "n_group", 1);
  c.topk_group = get_opt<int64_t>(j, "topk_group", 1);
  c.topk_method = get_opt<std::string>(j, "topk_method", "noaux_tc");
  c.scoring_func = get_opt<std::string>(j, "scoring_func", "sigmoid");
  c.norm_topk_prob = get_opt<bool>(j, "norm_topk_prob", true);
  c.routed_scaling_factor = get_opt<double>(j, "routed_scaling_factor", 1.0);
  c.first_k_dense_replace = get_opt<int64_t>(j, "first_k_dense_replace", 0);
  c.moe_layer_freq = get_opt<int64_t>(j, "moe_layer_freq", 1);
  c.index_n_heads = get_req<int64_t>(j, "index_n_heads");
  c.index_head_dim = get_req<int64_t>(j, "index_head_dim");
  c.index_topk = get_req<int64_t>(j, "index_topk");
  c.max_position_embeddings = get_req<int64_t>(j, "max_position_embeddings");
  c.rms_norm_eps = get_opt<double>(j, "rms_norm_eps", 1e-6);
  c.rope_theta = get_opt<double>(j, "rope_theta", 10000.0);
  c.bos_token_id = get_opt<int64_t>(j, "bos_token_id", 0);
  c.eos_token_id = get_opt<int64_t>(j, "eos_token_id", 1);
  c.tie_word_embeddings = get_opt<bool>(j, "tie_word_embeddings", false);
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
    const json& r = j["rope_scaling"];
    c.rope_type = get_opt<std::string>(r, "type", get_opt<std::string>(r, "rope_type", ""));
    c.rope_factor = get_opt<double>(r, "factor", 1.0);
    c.original_max_position_embeddings = get_opt<int64_t>(r, "original_max_position_embeddings", 4096);
    c.beta_fast = get_opt<double>(r, "beta_fast", 32.0);
    c.beta_slow = get_opt<double>(r, "beta_slow", 1.0);
    c.mscale = get_opt<double>(r, "mscale", 1.0);
    c.mscale_all_dim = get_opt<double>(r, "mscale_all_dim", 0.0);
  }
  if (j.contains("quantization_config") && j["quantization_config"].is_object()) {
    const json& q = j["quantization_config"];
    const auto method = get_opt<std::string>(q, "quant_method", "");
    DSA_CHECK(method == "fp8", "config.json: quantization_config.quant_method \"{}\" is not supported (only fp8)", method);
    const auto fmt = get_opt<std::string>(q, "fmt", "e4m3");
    DSA_CHECK(fmt == "e4m3", "config.json: quantization_config.fmt \"{}\" is not supported (only e4m3)", fmt);
    c.fp8 = true;
    c.scale_fmt = get_opt<std::string>(q, "scale_fmt", "ue8m0");
    if (q.contains("weight_block_size")) {
      auto b = q["weight_block_size"];
      DSA_CHECK(b.is_array() && b.size() == 2 && b[0].is_number_integer() && b[1].is_number_integer(),
                "config.json: quantization_config.weight_block_size must be [128, 128]");
      DSA_CHECK(b[0].get<int64_t>() == 128 && b[1].get<int64_t>() == 128,
                "config.json: weight_block_size [{}, {}] is not supported (only [128, 128])",
                b[0].get<int64_t>(), b[1].get<int64_t>());
    }
  }
  c.validate();
  return c;
}

void ModelConfig::validate() const {
  DSA_CHECK(model_type == "deepseek_v32", "config.json: model_type \"{}\" is not deepseek_v32", model_type);
  auto pos = [](const char* name, int64_t v) {
    DSA_CHECK(v > 0, "config.json: {} must be positive, got {}", name, v);
  };
  pos("vocab_size", vocab_size);
  pos("hidden_size", hidden_size);
  pos("intermediate_size", intermediate_size);
  pos("num_hidden_layers", num_hidden_layers);
  pos("num_attention_heads", num_attention_heads);
  pos("q_lora_rank", q_lora_rank);
  pos("kv_lora_rank", kv_lora_rank);
  pos("qk_nope_head_dim", qk_nope_head_dim);
  pos("qk_rope_head_dim", qk_rope_head_dim);
  pos("v_head_dim", v_head_dim);
  pos("index_n_heads", index_n_heads);
  pos("index_head_dim", index_head_dim);
  pos("index_topk", index_topk);
  pos("max_position_embeddings", max_position_embeddings);
  // Upper bounds far above any released model, low enough that every shape product of the tensor
  // table stays exact in int64 (no signed overflow) and absurd counts fail before any allocation.
  auto at_most = [](const char* name, int64_t v, int64_t hi) {
    DSA_CHECK(v <= hi, "config.json: {} = {} is beyond the supported maximum {}", name, v, hi);
  };
  at_most("vocab_size", vocab_size, int64_t(1) << 24);
  at_most("hidden_size", hidden_size, int64_t(1) << 17);
  at_most("intermediate_size", intermediate_size, int64_t(1) << 20);
  at_most("moe_intermediate_size", moe_intermediate_size, int64_t(1) << 20);
  at_most("num_hidden_layers", num_hidden_layers, 4096);
  at_most("num_nextn_predict_layers", num_nextn_predict_layers, 16);
  DSA_CHECK(num_nextn_predict_layers >= 0, "config.json: num_nextn_predict_layers must be >= 0");
  at_most("num_attention_heads", num_attention_heads, 4096);
  at_most("q_lora_rank", q_lora_rank, int64_t(1) << 17);
  at_most("kv_lora_rank", kv_lora_rank, int64_t(1) << 17);
  at_most("qk_nope_head_dim", qk_nope_head_dim, 4096);
  at_most("qk_rope_head_dim", qk_rope_head_dim, 4096);
  at_most("v_head_dim", v_head_dim, 4096);
  at_most("n_routed_experts", n_routed_experts, int64_t(1) << 16);
  at_most("n_shared_experts", n_shared_experts, 64);
  at_most("index_n_heads", index_n_heads, 4096);
  at_most("index_topk", index_topk, int64_t(1) << 24);
  at_most("max_position_embeddings", max_position_embeddings, int64_t(1) << 30);
  DSA_CHECK(num_key_value_heads == num_attention_heads,
            "config.json: num_key_value_heads ({}) must equal num_attention_heads ({}) for MLA",
            num_key_value_heads, num_attention_heads);
  DSA_CHECK(qk_rope_head_dim % 2 == 0, "config.json: qk_rope_head_dim ({}) must be even", qk_rope_head_dim);
  DSA_CHECK(index_head_dim >= qk_rope_head_dim,
            "config.json: index_head_dim ({}) must be >= qk_rope_head_dim ({})", index_head_dim, qk_rope_head_dim);
  DSA_CHECK((index_head_dim & (index_head_dim - 1)) == 0,
            "config.json: index_head_dim ({}) must be a power of two (Hadamard rotation)", index_head_dim);
  DSA_CHECK(index_head_dim <= 128, "config.json: index_head_dim ({}) must be <= 128 (one FP8 scale block)",
            index_head_dim);
  DSA_CHECK(fp8, "config.json: quantization_config with quant_method fp8 is required (FP8 checkpoints only)");
  DSA_CHECK(scale_fmt == "ue8m0", "config.json: scale_fmt \"{}\" is not supported (only ue8m0)", scale_fmt);
  DSA_CHECK(first_k_dense_replace >= 0 && first_k_dense_replace <= num_hidden_layers,
            "config.json: first_k_dense_replace ({}) out of range", first_k_dense_replace);
  DSA_CHECK(moe_layer_freq >= 1, "config.json: moe_layer_freq must be >= 1");
  if (n_routed_experts > 0) {
    pos("moe_intermediate_size", moe_intermediate_size);
    pos("num_experts_per_tok", num_experts_per_tok);
    DSA_CHECK(scoring_func == "sigmoid", "config.json: scoring_func \"{}\" is not supported (only sigmoid)", scoring_func);
    DSA_CHECK(topk_method == "noaux_tc", "config.json: topk_method \"{}\" is not supported (only noaux_tc)", topk_method);
    DSA_CHECK(n_group >= 1 && n_routed_experts % n_group == 0,
              "config.json: n_routed_experts ({}) must be a multiple of n_group ({})", n_routed_experts, n_group);
    DSA_CHECK(topk_group >= 1 && topk_group <= n_group, "config.json: topk_group ({}) must be in [1, n_group={}]",
              topk_group, n_group);
    DSA_CHECK(n_routed_experts / n_group >= 2, "config.json: noaux_tc needs at least 2 experts per group");
    DSA_CHECK(num_experts_per_tok <= topk_group * (n_routed_experts / n_group),
              "config.json: num_experts_per_tok ({}) exceeds the experts of the kept groups ({})",
              num_experts_per_tok, topk_group * (n_routed_experts / n_group));
    DSA_CHECK(n_shared_experts >= 0, "config.json: n_shared_experts must be >= 0");
  }
  DSA_CHECK(rms_norm_eps > 0, "config.json: rms_norm_eps must be positive");
  DSA_CHECK(rope_theta > 0, "config.json: rope_theta must be positive");
  if (rope_type == "yarn") {
    DSA_CHECK(rope_factor >= 1, "config.json: rope_scaling.factor must be >= 1");
    DSA_CHECK(original_max_position_embeddings > 0, "config.json: rope_scaling.original_max_position_embeddings must be positive");
  } else {
    DSA_CHECK(rope_type.empty(), "config.json: rope_scaling.type \"{}\" is not supported (only yarn)", rope_type);
  }
  DSA_CHECK(!tie_word_embeddings, "config.json: tie_word_embeddings is not used by deepseek_v32");
  DSA_CHECK(bos_token_id >= 0 && bos_token_id < vocab_size && eos_token_id >= 0 && eos_token_id < vocab_size,
            "config.json: bos/eos token id out of vocabulary");
}

ModelConfig ModelConfig::load(const std::string& path) {
  const std::string text = read_text_file(path, 16u << 20, "config.json");
  json j;
  try {
    j = parse_json(text);
  } catch (const Error& e) {
    DSA_FAIL("{}: invalid JSON: {}", path, e.what());
  }
  try {
    return from_json(j);
  } catch (const Error& e) {
    DSA_FAIL("{}: {}", path, e.what());
  }
}

json ModelConfig::to_json() const {
  json j;
  j["architectures"] = {"DeepseekV32ForCausalLM"};
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["moe_intermediate_size"] = moe_intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_nextn_predict_layers"] = num_nextn_predict_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["q_lora_rank"] = q_lora_rank;
  j["kv_lora_rank"] = kv_lora_rank;
  j["qk_nope_head_dim"] = qk_nope_head_dim;
  j["qk_rope_head_dim"] = qk_rope_head_dim;
  j["v_head_dim"] = v_head_dim;
  j["n_routed_experts"] = n_routed_experts;
  j["n_shared_experts"] = n_shared_experts;
  j["num_experts_per_tok"] = num_experts_per_tok;
  j["n_group"] = n_group;
  j["topk_group"] = topk_group;
  j["topk_method"] = topk_method;
  j["scoring_func"] = scoring_func;
  j["norm_topk_prob"] = norm_topk_prob;
  j["routed_scaling_factor"] = routed_scaling_factor;
  j["first_k_dense_replace"] = first_k_dense_replace;
  j["moe_layer_freq"] = moe_layer_freq;
  j["index_n_heads"] = index_n_heads;
  j["index_head_dim"] = index_head_dim;
  j["index_topk"] = index_topk;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  if (!rope_type.empty())
    j["rope_scaling"] = {{"type", rope_type}, {"factor", rope_factor},
                         {"original_max_position_embeddings", original_max_position_embeddings},
                         {"beta_fast", beta_fast}, {"beta_slow", beta_slow},
                         {"mscale", mscale}, {"mscale_all_dim", mscale_all_dim}};
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_id;
  j["torch_dtype"] = "bfloat16";
  j["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"activation_scheme", "dynamic"},
                              {"scale_fmt", scale_fmt}, {"weight_block_size", {128, 128}}};
  return j;
}

}  // namespace dsa
