// Backward and optimiser ops of the trainer (docs/training.md): plain parameter structs like
// ops.h, one GradTable per backend that supports training (OpTable::grad). Gradients are fp32;
// every rounding of the forward is straight-through (the gradient of the exact formula at the
// values the forward used). All reductions have a fixed order: results are deterministic.
#pragma once
#include <cstdint>

#include "base/numeric.h"
#include "ops/ops.h"

namespace dsa::ops {

enum class GemmType : uint8_t { F32, BF16 };

// C[b] = (accumulate ? C[b] : 0) + op(A[b]) · op(B[b]) for b < batch, fp32 (or better) accumulation
// in increasing k, fp32 result. op(A) is [M, K]: A stored [M, K] with row stride lda, or (trans_a)
// [K, M]. op(B) is [K, N]: B stored [K, N] with row stride ldb, or (trans_b) [N, K]. Batch b's
// operands start at a + b*stride_a, b + b*stride_b, c + b*stride_c (elements).
struct Gemm {
  const void* a;
  const void* b;
  float* c;
  GemmType ta, tb;
  int64_t M, N, K, lda, ldb, ldc;
  bool trans_a, trans_b, accumulate;
  int64_t batch = 1, stride_a = 0, stride_b = 0, stride_c = 0;
};

// Dequantise an FP8 matrix: out[r, c] = fp32(q[r, c]) * s[(r / block_rows) * ceil(C/128) + c/128],
// written as fp32 or bf16 (RNE). block_rows = 1: act_quant scales [R, ceil(C/128)] (the result is
// bf16-exact); 128: weight scales [ceil(R/128), ceil(C/128)].
struct Dequant {
  const fp8* q;    // [R, C]
  const float* s;  // see above
  void* out;       // [R, C] fp32 or bf16
  int64_t R, C, block_rows;
  bool to_bf16;
};

// Weight quantiser of docs/training.md §1 (= make-model's): per 128x128 block (partial blocks
// allowed) amax = max|x|, s = fp32(max(amax, 1e-12) / 448), q = fp8_rne(clamp(x / s, ±448)).
struct WeightQuant {
  const float* x;  // [R, C] fp32 master
  fp8* q;          // [R, C]
  float* s;        // [ceil(R/128), ceil(C/128)]
  int64_t R, C;
};

// Backward of rms_norm: r = fp32(x) (+ fp32(res_in)), y = w * r * inv, inv = (mean(r^2)+eps)^-1/2.
// dr = dres + dy · ∂y/∂r written to dx (it is the gradient of x and of res_in alike);
// dw[d] += Σ_m dy[m,d] * r[m,d] * inv[m] in increasing m. dres may be nullptr.
struct RmsNormBwd {
  const bf16* x;       // [M, D] forward input
  const bf16* res_in;  // [M, D] forward residual input (before the add), or nullptr
  const float* w;      // [D]
  const float* dy;     // [M, D]
  const float* dres;   // [M, D] gradient of the residual output, or nullptr
  float* dx;           // [M, D] (may alias dres or dy)
  float* dw;           // [D] accumulated
  int64_t M, D;
  float eps;
};

// Backward of layer_norm: x̂ = (r - mean) * inv; y = x̂ * w + b.
// dx = inv * (g - mean(g) - x̂ * mean(g * x̂)) with g = dy * w; dw += Σ dy*x̂; db += Σ dy.
struct LayerNormBwd {
  const bf16* x;   // [M, D]
  const float* w;  // [D]
  const float* dy; // [M, D]
  float* dx;       // [M, D] (may alias dy)
  float* dw;       // [D] accumulated
  float* db;       // [D] accumulated
  int64_t M, D;
  float eps;
};

// Backward of rope, in place on fp32 gradients (the transpose of the rotation).
struct RopeBwd {
  float* dx;           // [M, H, row_stride]
  const int32_t* pos;  // [M]
  const float* cos;    // [max_pos, rope_dim/2]
  const float* sin;
  int64_t M, H, row_stride, off, rope_dim;
  bool interleaved;
};

// x <- (H_n · x) * n^-0.5 in fp32, in place (the backward of hadamard: H_n is symmetric).
struct HadamardF32 {
  float* x;  // [M, n]
  int64_t M, n;
};

// Backward of sparse_mla_decode, phase 1 (per query row and head). With the forward's
// p_j = bf16(softmax(score)) recomputed from the same inputs, dp_j = d_o · c_j, D = Σ p_j dp_j:
//   g_j = scale * p_j * (dp_j - D);  d_q_abs = Σ_j g_j c_j;  d_q_pe = Σ_j g_j pe_j.
// P and G ([S, H, K], 0 at empty slots) keep p_j and g_j for phase 2.
struct SparseMlaBwdQ {
  const bf16* q_abs;     // [S, H, kv_lora]
  const bf16* q_pe;      // [S, H, rope]
  const uint8_t* cache;  // [N, layout.row_bytes()]
  const int32_t* idx;    // [S, K] physical rows, -1 = none
  const float* d_o;      // [S, H, kv_lora] gradient of o_lat
  float* d_q_abs;        // [S, H, kv_lora]
  float* d_q_pe;         // [S, H, rope]
  float* P;              // [S, H, K]
  float* G;              // [S, H, K]
  int64_t S, H, N, K;
  LatentLayout layout;
  float scale;
};

// Phase 2 (per key): key r was selected at the slots key_list[key_ptr[r] .. key_ptr[r+1]) (each
// s*K + j, ascending); in that order and then by head,
//   d_kv[r, 0:L] = Σ P[s,h,j] d_o[s,h,:] + G[s,h,j] q_abs[s,h,:];  d_kv[r, L:L+R] = Σ G[s,h,j] q_pe[s,h,:].
struct SparseMlaBwdKv {
  const bf16* q_abs;       // [S, H, L]
  const bf16* q_pe;        // [S, H, R]
  const float* d_o;        // [S, H, L]
  const float* P;          // [S, H, K]
  const float* G;          // [S, H, K]
  const int32_t* key_ptr;  // [n_keys + 1]
  const int32_t* key_list; // [key_ptr[n_keys]]
  float* d_kv;             // [n_keys, L + R] (written)
  int64_t n_keys, S, H, K, L, R;
};

// Backward of silu_mul (h = silu(g) * u): dg = dh * u * σ(g) * (1 + g (1 - σ(g))), du = dh * silu(g).
struct SiluMulBwd {
  const bf16* g;   // [M, N]
  const bf16* u;   // [M, N]
  const float* dh; // [M, N]
  float* dg;       // [M, N]
  float* du;       // [M, N]
  int64_t M, N;
};

// Backward of moe_gate's combine weights: weights_j = route_scale * s_j (/ Σ_chosen s if norm),
// s = sigmoid(logit). d_logits[t, e] = (Σ over paths) ds_e * s_e * (1 - s_e), where ds comes from
// d_weights through the normalisation (chosen experts) plus d_scores[t, e] (optional, a gradient
// on every unbiased score, e.g. from the balance loss). Written (not accumulated).
struct MoeGateBwd {
  const float* logits;     // [T, E]
  const int32_t* experts;  // [T, k]
  const float* d_weights;  // [T, k]
  const float* d_scores;   // [T, E] or nullptr
  float* d_logits;         // [T, E]
  int64_t T, E, k;
  bool norm_topk_prob;
  float route_scale;
};

// Backward of moe_combine (acc[s] += fp32(y[p]) * w[p], p = pos[s, j]):
// d_y[p] = d_acc[s] * w[p] (rows no choice points at get 0), d_w[p] = Σ_h d_acc[s,h] * y[p,h].
struct MoeCombineBwd {
  const float* d_acc;  // [S, H]
  const bf16* y;       // [R, H]
  const int32_t* pos;  // [S, k]
  const float* w;      // [R]
  float* d_y;          // [R, H]
  float* d_w;          // [R]
  int64_t S, k, H, R;
};

// Deterministic scatter-add by groups: dst[dst_rows[g]] += Σ_{i in [ptr[g], ptr[g+1])} src[src_rows[i]]
// (in increasing i) for g < G. Distinct dst_rows. Embedding backward, cache rows -> token rows,
// expert rows -> token rows.
struct ScatterAddRows {
  float* dst;               // [*, H]
  const float* src;         // [*, H]
  const int32_t* dst_rows;  // [G]
  const int32_t* ptr;       // [G + 1]
  const int32_t* src_rows;  // [ptr[G]]
  int64_t G, H;
};

// Log-softmax of fp32 logit rows in double, keys in index order (the sampler's log-prob):
// lse = mx + log Σ_v exp(z[v] - mx); logp[m] = z[target[m]] - lse. With dz set:
// dz[m, v] = g[m] * ((v == target[m]) - exp(z[v] - lse)) (the gradient of Σ g·logp); dz may alias z.
struct LogitsGrad {
  const float* z;         // [M, V]
  const int32_t* target;  // [M]
  double* logp;           // [M] or nullptr
  const float* g;         // [M] (when dz is set)
  float* dz;              // [M, V] or nullptr
  int64_t M, V;
};

// Keep-sampling-mask: row m keeps only the ids[off[m] .. off[m+1]) (ascending, distinct), every
// other logit of the row becomes -inf (so logits_grad renormalises over the set and sends it no
// gradient); a row with an empty set is left as it is (nothing was cut).
struct MaskLogits {
  float* z;            // [M, V]
  const int64_t* off;  // [M + 1]
  const int32_t* ids;  // [off[M]]
  int64_t M, V;
};

// AdamW step on fp32 masters (docs/training.md §5), g scaled by grad_scale first:
// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²; p -= lr * ((m / bc1) / (sqrt(v / bc2) + eps) + wd * p).
struct AdamW {
  float* p;
  const float* g;
  float* m;
  float* v;
  int64_t n;
  float lr, beta1, beta2, eps, wd, grad_scale, bc1, bc2;
};

// *out = Σ x[i]^2 in double, fixed blocked order (out: one double in backend memory).
struct SumSquares {
  const float* x;
  int64_t n;
  double* out;
};

// y += alpha * x (fp32).
struct Axpy {
  float* y;
  const float* x;
  float alpha;
  int64_t n;
};

// The indexer's KL loss of one layer (docs/dsa_conversion.md §1), per query row t over the slots
// j < K with idx[t,j] >= 0 (the keys its attention ran over):
//   target p[j] = Σ_h P[t,h,j] / Σ_{h,j'} P[t,h,j']  (attention probabilities summed over heads, L1-normalised);
//   q[j] = softmax_j(scores[t, idx[t,j]]);  loss[t] = Σ_j p[j] (log p[j] - log q[j])  (0 log 0 = 0);
//   d_scores[t, s] = coef * (q[j] - p[j]) at s = idx[t,j], 0 elsewhere (written; nullptr: none).
// recall[t] (when sel is set) = Σ p[j] over the slots whose key is in sel[t, 0:ksel] (-1 = none):
// the share of the target inside the indexer's top-k. Sums in double, slots in increasing j.
struct IndexerKl {
  const float* P;        // [S, H, K] attention probabilities (sparse_mla_bwd_q's P)
  const int32_t* idx;    // [S, K] logical key positions, -1 = empty slot
  const float* scores;   // [S, N] indexer logits (indexer_logits' out)
  const int32_t* sel;    // [S, ksel] logical positions or nullptr
  double* loss;          // [S]
  double* recall;        // [S] or nullptr
  float* d_scores;       // [S, N] or nullptr
  int64_t S, H, K, N, ksel;
  float coef;
};

// Backward of indexer_logits, straight through its FP8 steps: with q~[t,h] = fp32(q8[t,h]) qs[t,h],
// k~[r] = fp32(k8[r]) ks[r], a = q~[t,h]·k~[r] for the key r = key_base[t] + s (s < end[t]), the
// forward is I[t,s] = c Σ_h w[t,h] max(a, 0) (c = H^-0.5 D^-0.5; w = weights_proj's output before
// indexer_weights). Given dI [S, N]:
//   dw[t,h] = c Σ_s dI relu(a);  dq[t,h] = c w[t,h] Σ_{s: a>0} dI k~[r];  dk[r] += c Σ_{t,h: a>0} dI w q~
// (dw and dq written, dk accumulated; fixed order: t, then h, then s increasing).
struct IndexerLogitsBwd {
  const fp8* q8;             // [S, H, D]
  const float* qs;           // [S, H]
  const fp8* k8;             // [NK, D] key rows
  const float* ks;           // [NK]
  const float* w;            // [S, H]
  const int32_t* key_base;   // [S] key row of position 0 of each query's sequence
  const int32_t* end;        // [S] visible keys
  const float* dI;           // [S, N]
  float* dw;                 // [S, H]
  float* dq;                 // [S, H, D]
  float* dk;                 // [NK, D]
  int64_t S, H, D, NK, N;
};

struct GradTable {
  void (*gemm)(const Gemm&);
  void (*dequant)(const Dequant&);
  void (*weight_quant)(const WeightQuant&);
  void (*rms_norm_bwd)(const RmsNormBwd&);
  void (*layer_norm_bwd)(const LayerNormBwd&);
  void (*rope_bwd)(const RopeBwd&);
  void (*hadamard_f32)(const HadamardF32&);
  void (*sparse_mla_bwd_q)(const SparseMlaBwdQ&);
  void (*sparse_mla_bwd_kv)(const SparseMlaBwdKv&);
  void (*silu_mul_bwd)(const SiluMulBwd&);
  void (*moe_gate_bwd)(const MoeGateBwd&);
  void (*moe_combine_bwd)(const MoeCombineBwd&);
  void (*scatter_add_rows)(const ScatterAddRows&);
  void (*logits_grad)(const LogitsGrad&);
  void (*adamw)(const AdamW&);
  void (*sum_squares)(const SumSquares&);
  void (*axpy)(const Axpy&);
  // Indexer training (DSA conversion); nullptr on a backend that lacks them.
  void (*indexer_kl)(const IndexerKl&) = nullptr;
  void (*indexer_logits_bwd)(const IndexerLogitsBwd&) = nullptr;
  void (*mask_logits)(const MaskLogits&) = nullptr;  // RL (keep-sampling-mask)
};

const GradTable& ref_grad_ops();
const GradTable& cpu_grad_ops();

}  // namespace dsa::ops
