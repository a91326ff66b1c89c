// Backend-neutral op API: plain parameter structs (shapes commented on every pointer) and a table
// of implementations. ops/ref holds the scalar reference of every op; fast CPU / CUDA kernels
// register tables of their own. Rounding points follow ../shared/spec/dsa-v32.md exactly.
// Shapes are PyTorch order, row-major, contiguous unless a stride is given.
#pragma once
#include <cstdint>

#include "base/numeric.h"

namespace dsa::ops {

constexpr int kBlock = 128;  // quantisation block (activations 1x128, weights 128x128)
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// act_quant (spec §3.1): per row, per 128-column block (partial last block allowed):
// amax=max(|x|,1e-4); s=ue8m0_scale_for_amax(amax); q=fp8(clamp(x/s,±448)).
struct ActQuant {
  const bf16* x;  // [M, K]
  fp8* q;         // [M, K]
  float* s;       // [M, ceil(K/128)]
  int64_t M, K;
};

// fp8_gemm (spec §3.2): y[m,n] = bf16( Σ_kb dot128(a[m,kb], w[n,kb]) * (a_s[m,kb]*w_s[n/128,kb]) ),
// dot in fp32, scale product in fp32, accumulation over kb in increasing order in fp32.
struct Fp8Gemm {
  const fp8* a;      // [M, K]
  const float* a_s;  // [M, ceil(K/128)]
  const fp8* w;      // [N, K]
  const float* w_s;  // [ceil(N/128), ceil(K/128)]
  bf16* y;           // [M, N] with row stride ldy (elements)
  int64_t M, N, K, ldy;
};

// Grouped fp8_gemm (routed experts): G weight matrices; output row r belongs to the group g with
// offsets[g] <= r < offsets[g+1] and is fp8_gemm (same rounding) of activation row rows[r] (or row
// r when rows == nullptr) with group g's weights. offsets/rows/w/w_s live in backend memory (the
// pointer arrays hold backend pointers): a device backend reads the grouping on the device.
struct GroupedFp8Gemm {
  const fp8* a;               // [*, K] activation rows
  const float* a_s;           // [*, ceil(K/128)]
  const int32_t* rows;        // [R] source row of each output row, or nullptr (identity)
  const int32_t* offsets;     // [G + 1], offsets[0] = 0, offsets[G] = R, non-decreasing
  const fp8* const* w;        // [G] -> [N, K]
  const float* const* w_s;    // [G] -> [ceil(N/128), ceil(K/128)]
  bf16* y;                    // [R, N] with row stride ldy
  int64_t G, R, N, K, ldy;    // R: total rows (host-known upper bound = offsets[G])
};

// y = fp32(x) @ fp32(w)^T in fp32 (gate, indexer weights_proj, LM head). Accumulate in fp32 or
// better (reference: double).
struct LinearF32 {
  const float* x;  // [M, K]
  const bf16* w;   // [N, K]
  float* y;        // [M, N]
  int64_t M, N, K;
};

// RMSNorm (spec §3.4). Without residual: y = bf16(w * x32 * rsqrt(mean(x32^2)+eps)).
// With residual: r = fp32(x)+fp32(residual); normalise r; residual <- bf16(r) (in place).
struct RmsNorm {
  const bf16* x;    // [M, D]
  bf16* residual;   // [M, D] in/out, or nullptr
  const float* w;   // [D]
  bf16* y;          // [M, D] (may alias x when residual == nullptr)
  int64_t M, D;
  float eps;
};

// LayerNorm (spec §3.5): fp32, biased variance, y = bf16(((x-mean)*rsqrt(var+eps))*w + b).
struct LayerNorm {
  const bf16* x;   // [M, D]
  const float* w;  // [D]
  const float* b;  // [D]
  bf16* y;         // [M, D]
  int64_t M, D;
  float eps;
};

// RoPE in place (spec §3.6) on rows x[m, h, off : off+rope_dim], fp32 math, bf16 out.
// interleaved: pairs (2i, 2i+1) (MLA); otherwise half-split pairs (i, i+rope_dim/2) (indexer).
// cos/sin: [max_pos, rope_dim/2] fp32 tables; angle row = pos[m].
struct Rope {
  bf16* x;             // [M, H, row_stride] (elements)
  const int32_t* pos;  // [M]
  const float* cos;    // [max_pos, rope_dim/2]
  const float* sin;    // [max_pos, rope_dim/2]
  int64_t M, H, row_stride, off, rope_dim;
  bool interleaved;
};

// Hadamard rotation in place (spec §3.7): x <- bf16((H_n · fp32(x)) * n^-0.5), Sylvester order.
struct Hadamard {
  bf16* x;  // [M, n], n a power of two
  int64_t M, n;
};

// Paged indexer key cache: page p holds page_size keys as [page_size * D fp8][page_size fp32
// scales] (132 B per key at D = 128), so a page's FP8 block is contiguous for vector loads.
struct IndexPages {
  const uint8_t* pool;         // [num_pages, page_bytes()]
  const int32_t* block_table;  // [rows, bt_stride] page ids; row r's key s is in page
                               // block_table[r*bt_stride + s/page_size], slot s % page_size
  int64_t bt_stride;           // 0 = every row uses the same table
  int64_t page_size, D, num_pages;
  int64_t page_bytes() const { return page_size * (D + 4); }
};

// Indexer logits (spec §3.8): out[t,s] = k_s[s] * Σ_h w[t,h] * max(0, Σ_d q[t,h,d]*k[s,d]),
// fp32 dot of the fp8 values, heads summed in increasing h, for s < end[t];
// out[t,s] = -inf for end[t] <= s < N. Keys of query row t come from its row of the block table.
struct IndexerLogits {
  const fp8* q;          // [S, H, D]
  const float* w;        // [S, H]
  IndexPages k;
  const int32_t* end;    // [S] number of visible keys of each query
  float* out;            // [S, N]
  int64_t S, H, N;
};

// Top-k selection per row over out[t, 0:end[t]]: the min(k, end[t]) largest scores (any order
// of ties at the k-th value); idx[t, j] for j >= min(k,end[t]) is -1. Result sorted ascending.
struct TopK {
  const float* scores;  // [S, N]
  const int32_t* end;   // [S]
  int32_t* idx;         // [S, k]
  int64_t S, N, k;
};

// Sparse MHA-mode prefill attention (spec §6.1) over the selected keys of each query:
//   score = bf16(bf16(q·k) * scale) for each selected key (fp32 dot over d_qk);
//   p = bf16(softmax(score)) (fp32 inside); o = bf16(Σ p·v) (fp32 accumulate).
// idx[s, j] < 0 means "no key"; a row with no key at all gets o = 0 (the model never makes one:
// every query sees at least itself). Keys/values are per head.
struct SparseMhaPrefill {
  const bf16* q;        // [S, H, d_qk]
  const bf16* k;        // [T, H, d_qk]
  const bf16* v;        // [T, H, d_v]
  const int32_t* idx;   // [S, K]
  bf16* o;              // [S, H, d_v]
  int64_t S, T, H, d_qk, d_v, K;
  float scale;
};

// Latent (MLA) cache row layout, 656 B at real dims: [kv_lora fp8][kv_lora/128 fp32 ue8m0-valued
// scales][rope bf16]. Dequantised latent c = fp8 * scale is exact in bf16.
struct LatentLayout {
  int64_t kv_lora, rope;
  int64_t scale_off() const { return kv_lora; }
  int64_t rope_off() const { return kv_lora + 4 * ceil_div(kv_lora, kBlock); }
  int64_t row_bytes() const { return rope_off() + 2 * rope; }
};

// Sparse absorbed-mode decode attention (spec §6.2) for S query tokens over latent rows:
//   score_t = bf16( bf16( bf16(q_abs·c_t) + bf16(q_pe·pe_t) ) * scale ) for each selected t,
//   p = bf16(softmax(score)), o_lat = bf16(Σ p·c_t) (fp32 accumulate).
// idx holds physical rows of the (paged) pool, -1 = no key; a row with no key gets zeros.
struct SparseMlaDecode {
  const bf16* q_abs;     // [S, H, kv_lora]
  const bf16* q_pe;      // [S, H, rope]
  const uint8_t* cache;  // [N, layout.row_bytes()] bytes
  const int32_t* idx;    // [S, K], -1 = no key
  bf16* o_lat;           // [S, H, kv_lora]
  int64_t S, H, N, K;
  LatentLayout layout;
  float scale;
};

// Per-head bf16 matmul for the absorbed path: y[s,h,:] = bf16(x[s,h,:] @ W_h) where
//   trans_w == false: W_h = w[h] viewed [K, N] (y_n = Σ_k x_k w[h,k,n])
//   trans_w == true:  W_h = w[h] viewed [N, K] (y_n = Σ_k x_k w[h,n,k])
// w[h] starts at w + h*w_head_stride (elements) with row stride w_row_stride.
struct HeadMatmul {
  const bf16* x;  // [S, H, K] with strides (x_s_stride, x_h_stride)
  const bf16* w;
  bf16* y;        // [S, H, N] contiguous
  int64_t S, H, K, N, x_s_stride, x_h_stride, w_head_stride, w_row_stride;
  bool trans_w;
};

// MoE gate (spec §8.2) from fp32 logits: s = sigmoid(logit); b = s + bias (bias may be null);
// group score = sum of top-2 of b in each group (or max if bias == null); keep topk_group groups;
// choose topk experts by b among kept; weights = s at chosen / their sum (if norm) * route_scale.
// experts/weights are written ascending by expert index. biased (optional) receives b.
struct MoeGate {
  const float* logits;  // [T, E]
  const float* bias;    // [E] or nullptr
  int32_t* experts;     // [T, topk]
  float* weights;       // [T, topk]
  float* biased;        // [T, E] or nullptr
  int64_t T, E, n_group, topk_group, topk;
  bool norm_topk_prob;
  float route_scale;
};

// MoE routing table (spec §8.3): a stable counting sort of the S*k choices by expert, so the
// routed experts run as grouped GEMMs without the host. Group e (expert e) owns grouped rows
// [offsets[e], offsets[e+1]); inside a group, rows follow token order (then j). rows[r] is the
// token of grouped row r, row_w[r] its gate weight; pos[s, j] is the grouped row of token s's
// j-th choice. Ids must lie in [0, E): host backends throw; the CUDA kernel (which cannot) gives
// an out-of-range choice pos = -1 and no row, so offsets[E] < S*k then.
struct MoeRoute {
  const int32_t* experts;  // [S, k] (moe_gate's order: ascending per token, any order accepted)
  const float* weights;    // [S, k]
  int32_t* offsets;        // [E + 1]
  int32_t* rows;           // [S * k]
  float* row_w;            // [S * k]
  int32_t* pos;            // [S, k]
  int64_t S, k, E;
};

// Routed-expert combine (spec §8.3): acc[s, :] += fp32(y[p, :]) * w[p] for p = pos[s, j] taken
// in ascending p, i.e. ascending expert id (groups are in expert order); fp32 multiply, then
// fp32 add (no FMA). Bit-identical to one scale_add per expert in ascending expert order.
// pos < 0 = no choice (skipped).
struct MoeCombine {
  float* acc;          // [S, H] in/out
  const bf16* y;       // [R, H] expert outputs in grouped order
  const int32_t* pos;  // [S, k]
  const float* w;      // [R] weight of each grouped row (MoeRoute::row_w)
  int64_t S, k, H;
};

// SwiGLU combine: h = bf16(silu(fp32(g)) * fp32(u)) elementwise.
struct SiluMul {
  const bf16* g;  // [M, N]
  const bf16* u;  // [M, N]
  bf16* h;        // [M, N]
  int64_t M, N;
};

// ---- Memory and data movement. The model allocates every buffer through its backend and moves
// data only through these, so a device backend (CUDA) runs the same forward.
enum class CopyKind : uint8_t { kHostToDevice, kDeviceToHost, kDeviceToDevice };
struct Memory {
  bool device;                          // false: pointers are host memory the caller may touch
  void* (*alloc)(size_t bytes);         // 256-byte aligned; throws dsa::Error when out of memory
  void (*free)(void* p);
  // D2H completes before return; H2D may complete later (ordered before later ops), but the
  // source may be freed or reused as soon as copy returns.
  void (*copy)(void* dst, const void* src, size_t bytes, CopyKind kind);
  void (*fill)(void* dst, uint8_t byte, size_t bytes);
  void (*sync)();                       // waits for all queued work
};

// Copies n rows of row_bytes: row i from src + (src_off ? src_off[i] : i*src_stride) to
// dst + (dst_off ? dst_off[i] : i*dst_stride); offsets in bytes, offset arrays in backend memory.
// Gathers (embedding rows, cache rows), scatters (cache writes) and strided slices.
struct CopyRows {
  const uint8_t* src;
  uint8_t* dst;
  const int64_t* src_off;  // [n] or nullptr
  const int64_t* dst_off;  // [n] or nullptr
  int64_t src_stride, dst_stride, row_bytes, n;
};

// Elementwise bf16 <-> fp32 (RNE towards bf16).
struct Convert {
  const void* src;  // [n]
  void* dst;        // [n]
  int64_t n;
  bool to_f32;      // true: bf16 → f32; false: f32 → bf16
};

// Indexer head weights (spec §7 step 8), fp32 left to right: w[i] = ((w[i] * c1) * q_s[i]) * c2.
struct IndexerWeights {
  float* w;          // [n] in/out
  const float* q_s;  // [n]
  int64_t n;
  float c1, c2;
};

// Logical key positions → physical cache rows: phys = idx < 0 ? -1 :
// block_table[s*bt_stride + idx/page_size]*page_size + idx%page_size.
struct PagedRows {
  const int32_t* idx;          // [S, K]
  int32_t* phys;               // [S, K]
  const int32_t* block_table;  // [S, bt_stride]
  int64_t bt_stride, page_size, S, K;
};

// MoE combine step (spec §8.3): acc[r_i, :] += fp32(y[i, :]) * (w ? w[i] : 1), r_i = rows ? rows[i] : i.
// Rows within one call are distinct; calls are made in the reference's order (experts ascending,
// then the shared expert).
struct ScaleAdd {
  float* acc;           // [R, H]
  const int32_t* rows;  // [M] or nullptr
  const bf16* y;        // [M, H]
  const float* w;       // [M] or nullptr
  int64_t M, H;
};

struct GradTable;  // ops/grad.h: backward and optimiser ops (training)

// One table per backend. Every entry must be filled (grad: nullptr when the backend cannot train).
struct OpTable {
  const char* name;
  Memory mem;
  void (*act_quant)(const ActQuant&);
  void (*fp8_gemm)(const Fp8Gemm&);
  void (*grouped_fp8_gemm)(const GroupedFp8Gemm&);
  void (*linear_f32)(const LinearF32&);
  void (*rms_norm)(const RmsNorm&);
  void (*layer_norm)(const LayerNorm&);
  void (*rope)(const Rope&);
  void (*hadamard)(const Hadamard&);
  void (*indexer_logits)(const IndexerLogits&);
  void (*topk)(const TopK&);
  void (*sparse_mha_prefill)(const SparseMhaPrefill&);
  void (*sparse_mla_decode)(const SparseMlaDecode&);
  void (*head_matmul)(const HeadMatmul&);
  void (*moe_gate)(const MoeGate&);
  void (*silu_mul)(const SiluMul&);
  void (*moe_route)(const MoeRoute&);
  void (*moe_combine)(const MoeCombine&);
  void (*copy_rows)(const CopyRows&);
  void (*convert)(const Convert&);
  void (*indexer_weights)(const IndexerWeights&);
  void (*paged_rows)(const PagedRows&);
  void (*scale_add)(const ScaleAdd&);
  const GradTable* grad;
};

// Host memory for the host backends (ref, cpu).
const Memory& host_memory();

const OpTable& ref_ops();  // ops/ref: scalar reference, kept forever
const OpTable& cpu_ops();  // ops/cpu: Highway SIMD + thread pool, runtime-dispatched

}  // namespace dsa::ops
