// Argument checks of the host ops, shared by the reference (ops/ref) and the CPU kernels
// (ops/cpu): one place states what an op accepts, and both backends throw the same dsa::Error.
// The CPU kernels call them before splitting work over the thread pool (workers assume valid
// input).
#include <algorithm>

#include "ops/ref/ref_util.h"

namespace dsa::ops::ref {

void check(const ActQuant& p) {
  DSA_CHECK(p.M > 0 && p.K > 0, "act_quant: bad dims M={} K={}", p.M, p.K);
  DSA_CHECK(p.x && p.q && p.s, "act_quant: null pointer");
}

void check(const Fp8Gemm& p) {
  DSA_CHECK(p.M > 0 && p.N > 0 && p.K > 0, "fp8_gemm: bad dims M={} N={} K={}", p.M, p.N, p.K);
  DSA_CHECK(p.ldy >= p.N, "fp8_gemm: ldy={} < N={}", p.ldy, p.N);
  DSA_CHECK(p.a && p.a_s && p.w && p.w_s && p.y, "fp8_gemm: null pointer");
}

void check(const LinearF32& p) {
  DSA_CHECK(p.M > 0 && p.N > 0 && p.K > 0, "linear_f32: bad dims M={} N={} K={}", p.M, p.N, p.K);
  DSA_CHECK(p.x && p.w && p.y, "linear_f32: null pointer");
}

void check(const RmsNorm& p) {
  DSA_CHECK(p.M > 0 && p.D > 0, "rms_norm: bad dims M={} D={}", p.M, p.D);
  DSA_CHECK(p.x && p.w && p.y, "rms_norm: null pointer");
}

void check(const LayerNorm& p) {
  DSA_CHECK(p.M > 0 && p.D > 0, "layer_norm: bad dims M={} D={}", p.M, p.D);
  DSA_CHECK(p.x && p.w && p.b && p.y, "layer_norm: null pointer");
}

void check(const Rope& p) {
  DSA_CHECK(p.M > 0 && p.H > 0 && p.rope_dim > 0 && p.rope_dim % 2 == 0,
            "rope: bad dims M={} H={} rope_dim={}", p.M, p.H, p.rope_dim);
  DSA_CHECK(p.off >= 0 && p.off + p.rope_dim <= p.row_stride,
            "rope: off={} + rope_dim={} exceeds row_stride={}", p.off, p.rope_dim, p.row_stride);
  DSA_CHECK(p.x && p.pos && p.cos && p.sin, "rope: null pointer");
  for (int64_t m = 0; m < p.M; ++m)
    DSA_CHECK(p.pos[m] >= 0, "rope: negative position {} at row {}", p.pos[m], m);
}

void check(const Hadamard& p) {
  DSA_CHECK(p.M > 0 && p.n > 0 && (p.n & (p.n - 1)) == 0,
            "hadamard: bad dims M={} n={} (n must be a power of two)", p.M, p.n);
  DSA_CHECK(p.x, "hadamard: null pointer");
}

void check(const SiluMul& p) {
  DSA_CHECK(p.M > 0 && p.N > 0, "silu_mul: bad dims M={} N={}", p.M, p.N);
  DSA_CHECK(p.g && p.u && p.h, "silu_mul: null pointer");
}

// Also every row's end and every page id a row reads.
void check(const IndexerLogits& p) {
  const IndexPages& kp = p.k;
  DSA_CHECK(p.S > 0 && p.H > 0 && kp.D > 0 && p.N > 0 && kp.page_size > 0 && kp.num_pages > 0,
            "indexer_logits: bad dims S={} H={} D={} N={} page_size={} num_pages={}", p.S, p.H, kp.D,
            p.N, kp.page_size, kp.num_pages);
  DSA_CHECK(p.q && p.w && kp.pool && kp.block_table && p.end && p.out, "indexer_logits: null pointer");
  int64_t max_end = 0;
  for (int64_t t = 0; t < p.S; ++t) {
    DSA_CHECK(p.end[t] >= 0 && p.end[t] <= p.N, "indexer_logits: end[{}]={} outside [0, {}]", t,
              p.end[t], p.N);
    max_end = std::max<int64_t>(max_end, p.end[t]);
  }
  // A shared table (bt_stride 0) once, up to the longest row; else each row's own pages.
  for (int64_t t = 0; t < (kp.bt_stride == 0 ? 1 : p.S); ++t) {
    const int32_t* bt = kp.block_table + t * kp.bt_stride;
    for (int64_t b = 0; b < ceil_div(kp.bt_stride == 0 ? max_end : p.end[t], kp.page_size); ++b)
      DSA_CHECK(bt[b] >= 0 && bt[b] < kp.num_pages, "indexer_logits: page id {} outside [0, {})", bt[b],
                kp.num_pages);
  }
}

void check(const TopK& p) {
  DSA_CHECK(p.S > 0 && p.N > 0 && p.k > 0, "topk: bad dims S={} N={} k={}", p.S, p.N, p.k);
  DSA_CHECK(p.scores && p.end && p.idx, "topk: null pointer");
  for (int64_t t = 0; t < p.S; ++t)
    DSA_CHECK(p.end[t] >= 0 && p.end[t] <= p.N, "topk: end[{}]={} outside [0, {}]", t, p.end[t], p.N);
}

void check(const SparseMhaPrefill& p) {
  DSA_CHECK(p.S > 0 && p.T > 0 && p.H > 0 && p.d_qk > 0 && p.d_v > 0 && p.K > 0,
            "sparse_mha_prefill: bad dims S={} T={} H={} d_qk={} d_v={} K={}", p.S, p.T, p.H, p.d_qk,
            p.d_v, p.K);
  DSA_CHECK(p.q && p.k && p.v && p.idx && p.o, "sparse_mha_prefill: null pointer");
  for (int64_t i = 0; i < p.S * p.K; ++i)
    DSA_CHECK(p.idx[i] < p.T, "sparse_mha_prefill: idx[{}, {}]={} >= T={}", i / p.K, i % p.K, p.idx[i],
              p.T);
}

void check(const SparseMlaDecode& p) {
  const int64_t L = p.layout.kv_lora, R = p.layout.rope;
  DSA_CHECK(p.S > 0 && p.H > 0 && p.N > 0 && p.K > 0 && L > 0 && R >= 0,
            "sparse_mla_decode: bad dims S={} H={} N={} K={} kv_lora={} rope={}", p.S, p.H, p.N, p.K,
            L, R);
  DSA_CHECK(p.q_abs && p.cache && p.idx && p.o_lat && (R == 0 || p.q_pe), "sparse_mla_decode: null pointer");
  for (int64_t i = 0; i < p.S * p.K; ++i)
    DSA_CHECK(p.idx[i] < p.N, "sparse_mla_decode: idx[{}, {}]={} >= N={}", i / p.K, i % p.K, p.idx[i],
              p.N);
}

void check(const HeadMatmul& p) {
  DSA_CHECK(p.S > 0 && p.H > 0 && p.K > 0 && p.N > 0, "head_matmul: bad dims S={} H={} K={} N={}", p.S,
            p.H, p.K, p.N);
  DSA_CHECK(p.x && p.w && p.y, "head_matmul: null pointer");
  DSA_CHECK(p.w_row_stride >= (p.trans_w ? p.K : p.N), "head_matmul: w_row_stride={} too small",
            p.w_row_stride);
}

void check(const MoeGate& p) {
  DSA_CHECK(p.T > 0 && p.E > 0 && p.n_group > 0 && p.topk_group > 0 && p.topk > 0,
            "moe_gate: bad dims T={} E={} n_group={} topk_group={} topk={}", p.T, p.E, p.n_group,
            p.topk_group, p.topk);
  DSA_CHECK(p.E % p.n_group == 0 && p.topk_group <= p.n_group && p.topk <= p.topk_group * (p.E / p.n_group),
            "moe_gate: inconsistent E={} n_group={} topk_group={} topk={}", p.E, p.n_group, p.topk_group,
            p.topk);
  DSA_CHECK(p.logits && p.experts && p.weights, "moe_gate: null pointer");
}

}  // namespace dsa::ops::ref
