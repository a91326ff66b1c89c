// Model weights as loaded from a checkpoint: FP8 matrices stay FP8 (borrowed from the mapping),
// norm vectors are converted to fp32 once, the absorbed-decode wkv_b is dequantised once.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "base/tensor.h"
#include "io/safetensors.h"
#include "model/config.h"

namespace dsa {

struct Fp8Matrix {
  Tensor w;  // F8_E4M3 [out, in]
  Tensor s;  // F32 [ceil(out/128), ceil(in/128)] (weight_scale_inv)
  int64_t out = 0, in = 0;
};

struct Mlp {  // SwiGLU: w2(silu(w1 x) * w3 x)
  Fp8Matrix gate, up, down;
};

struct LayerWeights {
  Tensor attn_norm, ffn_norm;      // F32 [H]
  Fp8Matrix q_a, q_b, kv_a, kv_b, o;
  Tensor q_norm, kv_norm;          // F32 [q_lora], [kv_lora]
  Tensor wkv_b_bf16;               // BF16 [heads*(nope+v), kv_lora] (dequantised kv_b, decode path)
  // Indexer.
  Fp8Matrix idx_wq_b, idx_wk;
  Tensor idx_k_norm_w, idx_k_norm_b;  // F32 [index_head_dim]
  Tensor idx_weights_proj;            // BF16 [index_n_heads, H]
  // Feed-forward.
  bool moe = false;
  Mlp dense;                // !moe
  Tensor gate_w;            // BF16 [E, H]
  Tensor gate_bias;         // F32 [E]
  std::vector<Mlp> experts; // [E]
  // grouped_fp8_gemm tables of the experts' gate/up/down (index 0/1/2): I64 [E] holding backend
  // pointers to each expert's w / s, in backend memory. Built once the weights are on the backend
  // (build_expert_tables, model/layer.h); not visited by for_each_tensor (nothing to mirror).
  Tensor expert_w[3], expert_s[3];
  bool has_shared = false;
  Mlp shared;
};

// The MTP module (spec §11; docs/training.md §4): enorm/hnorm, eh_proj, one decoder block and
// the shared head's norm. The embedding and LM head are the main model's.
struct MtpWeights {
  Tensor enorm, hnorm, head_norm;  // F32 [H]
  Tensor eh_proj;                  // BF16 [H, 2H]
  LayerWeights layer;
};

struct ModelWeights {
  Tensor embed;     // BF16 [V, H]
  Tensor final_norm;// F32 [H]
  Tensor lm_head;   // BF16 [V, H]
  std::vector<LayerWeights> layers;
  std::vector<MtpWeights> mtp;       // filled by the trainer; the inference loader skips MTP
  std::vector<std::string> skipped;  // tensors recognised and deliberately not loaded (MTP)
};

// Named forward-ready tensors (norm vectors F32, FP8 matrices with their scales) from which a
// layer's weights are assembled: the checkpoint loader and the trainer's parameters both serve them.
struct WeightGetter {
  std::function<Tensor(const std::string&)> tensor;
  std::function<Fp8Matrix(const std::string&)> fp8;
  std::function<Tensor(const Fp8Matrix&)> dequant_bf16;  // BF16 copy of kv_b for the absorbed path
};
// Layer i's weights (HF prefix "model.layers.{i}."); mtp = the MTP block (always MoE-shaped as in
// the tensor table).
LayerWeights assemble_layer(const ModelConfig& c, int64_t i, bool mtp, const WeightGetter& g);

// fp32 values of one table tensor read from a checkpoint and validated exactly as load_weights
// does: FP8 matrices dequantised (fp8 * block scale), BF16 widened, F32 as stored. Host tensor.
Tensor load_dequantised(const Checkpoint& ckpt, const ModelConfig& cfg, const std::string& name);

// Calls fn on every tensor held by the weights (to move them to a device backend).
void for_each_tensor(ModelWeights& w, const std::function<void(Tensor&)>& fn);

// Throws dsa::Error naming the tensor and the first element that is NaN (FP8 e4m3fn, BF16) or
// infinite (BF16).
void check_finite_weights(const std::string& name, const TensorEntry& e);

// Loads and checks every tensor of the table. A missing, unexpected, mis-typed or mis-shaped
// tensor, a non-finite weight, or a non-finite / non-positive scale, throws dsa::Error naming
// the tensor. `log` receives one-line notes (e.g. the skipped MTP tensors).
ModelWeights load_weights(const Checkpoint& ckpt, const ModelConfig& cfg,
                          const std::function<void(const std::string&)>& log);

}  // namespace dsa
