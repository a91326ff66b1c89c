// CPU versions of the trainer's per-parameter ops (AdamW, weight quantisation, dequantisation,
// sum of squares, axpy): the reference's code on independent slices spread over the thread pool,
// so every result is the reference's bit for bit (sum_squares keeps its block order).
#include <vector>

#include "base/thread_pool.h"
#include "ops/cpu/cpu_ops.h"
#include "ops/ref/ref_util.h"

namespace dsa::ops::cpu {

namespace {
constexpr int64_t kChunk = 1 << 14;
}

void adamw(const AdamW& p) {
  parallel_for(ceil_div(p.n, kChunk), [&](int64_t c0, int64_t c1) {
    AdamW q = p;
    const int64_t b = c0 * kChunk, e = std::min(p.n, c1 * kChunk);
    q.p += b, q.g += b, q.m += b, q.v += b, q.n = e - b;
    ref::adamw(q);
  });
}

void weight_quant(const WeightQuant& p) {
  const int64_t cb = ceil_div(p.C, kBlock);
  parallel_for(ceil_div(p.R, kBlock), [&](int64_t b0, int64_t b1) {
    const int64_t r0 = b0 * kBlock, r1 = std::min(p.R, b1 * kBlock);
    ref::weight_quant({p.x + r0 * p.C, p.q + r0 * p.C, p.s + b0 * cb, r1 - r0, p.C});
  });
}

void dequant(const Dequant& p) {
  const int64_t cb = ceil_div(p.C, kBlock), unit = p.block_rows;
  const size_t esz = p.to_bf16 ? 2 : 4;
  parallel_for(ceil_div(p.R, unit), [&](int64_t u0, int64_t u1) {
    const int64_t r0 = u0 * unit, r1 = std::min(p.R, u1 * unit);
    ref::dequant({p.q + r0 * p.C, p.s + u0 * cb, static_cast<uint8_t*>(p.out) + size_t(r0 * p.C) * esz, r1 - r0, p.C,
                  p.block_rows, p.to_bf16});
  });
}

void sum_squares(const SumSquares& p) {
  constexpr int64_t kB = 4096;  // ref::sum_squares' blocks, summed in the same order
  const int64_t nb = ceil_div(p.n, kB);
  std::vector<double> part(static_cast<size_t>(nb));
  parallel_for(nb, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      double s = 0.0;
      for (int64_t i = b * kB; i < std::min(p.n, (b + 1) * kB); ++i) s += double(p.x[i]) * double(p.x[i]);
      part[size_t(b)] = s;
    }
  });
  double total = 0.0;
  for (double s : part) total += s;
  *p.out = total;
}

void axpy(const Axpy& p) {
  parallel_for(ceil_div(p.n, kChunk), [&](int64_t c0, int64_t c1) {
    const int64_t b = c0 * kChunk, e = std::min(p.n, c1 * kChunk);
    ref::axpy({p.y + b, p.x + b, p.alpha, e - b});
  });
}

// Row-independent ops: the reference on slices of rows.
void sparse_mla_bwd_q(const SparseMlaBwdQ& p) {
  const int64_t L = p.layout.kv_lora, R = p.layout.rope;
  parallel_for(p.S, [&](int64_t s0, int64_t s1) {
    SparseMlaBwdQ q = p;
    const int64_t sh = s0 * p.H;
    q.q_abs += sh * L, q.q_pe += sh * R, q.idx += s0 * p.K, q.d_o += sh * L, q.d_q_abs += sh * L, q.d_q_pe += sh * R;
    q.P += sh * p.K, q.G += sh * p.K, q.S = s1 - s0;
    ref::sparse_mla_bwd_q(q);
  });
}

void sparse_mla_bwd_kv(const SparseMlaBwdKv& p) {
  parallel_for(p.n_keys, [&](int64_t r0, int64_t r1) {
    SparseMlaBwdKv q = p;
    q.key_ptr += r0, q.d_kv += r0 * (p.L + p.R), q.n_keys = r1 - r0;
    ref::sparse_mla_bwd_kv(q);
  });
}

void logits_grad(const LogitsGrad& p) {
  parallel_for(p.M, [&](int64_t m0, int64_t m1) {
    LogitsGrad q = p;
    q.z += m0 * p.V, q.target += m0, q.M = m1 - m0;
    if (q.logp) q.logp += m0;
    if (q.g) q.g += m0;
    if (q.dz) q.dz += m0 * p.V;
    ref::logits_grad(q);
  });
}

void silu_mul_bwd(const SiluMulBwd& p) {
  parallel_for(p.M, [&](int64_t m0, int64_t m1) {
    const int64_t o = m0 * p.N;
    ref::silu_mul_bwd({p.g + o, p.u + o, p.dh + o, p.dg + o, p.du + o, m1 - m0, p.N});
  });
}

void rope_bwd(const RopeBwd& p) {
  parallel_for(p.M, [&](int64_t m0, int64_t m1) {
    RopeBwd q = p;
    q.dx += m0 * p.H * p.row_stride, q.pos += m0, q.M = m1 - m0;
    ref::rope_bwd(q);
  });
}

void moe_gate_bwd(const MoeGateBwd& p) {
  parallel_for(p.T, [&](int64_t t0, int64_t t1) {
    MoeGateBwd q = p;
    q.logits += t0 * p.E, q.experts += t0 * p.k, q.d_weights += t0 * p.k, q.d_logits += t0 * p.E, q.T = t1 - t0;
    if (q.d_scores) q.d_scores += t0 * p.E;
    ref::moe_gate_bwd(q);
  });
}

void scatter_add_rows(const ScatterAddRows& p) {
  parallel_for(p.G, [&](int64_t g0, int64_t g1) {
    ScatterAddRows q = p;
    q.dst_rows += g0, q.ptr += g0, q.G = g1 - g0;
    ref::scatter_add_rows(q);
  });
}

// Norm backward: the weight gradient of fixed 32-row chunks (whatever the thread count), added
// to dw in chunk order.
template <class P, class F>
void rows_with_partial_dw(const P& p, int nvec, F&& run) {
  constexpr int64_t kR = 32;
  const int64_t nc = ceil_div(p.M, kR);
  std::vector<float> part(size_t(nc * nvec * p.D), 0.0f);
  parallel_for(nc, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) run(c * kR, std::min(p.M, (c + 1) * kR), part.data() + c * nvec * p.D);
  });
  for (int v = 0; v < nvec; ++v) {
    float* dst = v == 0 ? p.dw : p.db_ptr();
    if (!dst) continue;
    for (int64_t c = 0; c < nc; ++c)
      for (int64_t d = 0; d < p.D; ++d) dst[d] += part[size_t((c * nvec + v) * p.D + d)];
  }
}

namespace {
struct RmsView : RmsNormBwd {
  float* db_ptr() const { return nullptr; }
};
struct LnView : LayerNormBwd {
  float* db_ptr() const { return db; }
};
}  // namespace

void rms_norm_bwd(const RmsNormBwd& p) {
  rows_with_partial_dw(RmsView{p}, 1, [&](int64_t m0, int64_t m1, float* dw) {
    const int64_t o = m0 * p.D;
    ref::rms_norm_bwd({p.x + o, p.res_in ? p.res_in + o : nullptr, p.w, p.dy + o, p.dres ? p.dres + o : nullptr,
                       p.dx + o, p.dw ? dw : nullptr, m1 - m0, p.D, p.eps});
  });
}

void layer_norm_bwd(const LayerNormBwd& p) {
  rows_with_partial_dw(LnView{p}, 2, [&](int64_t m0, int64_t m1, float* dw) {
    const int64_t o = m0 * p.D;
    ref::layer_norm_bwd({p.x + o, p.w, p.dy + o, p.dx + o, p.dw ? dw : nullptr, p.db ? dw + p.D : nullptr, m1 - m0,
                         p.D, p.eps});
  });
}

}  // namespace dsa::ops::cpu
