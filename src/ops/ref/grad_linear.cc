// Reference training ops (ops/grad.h): GEMM, (de)quantisation of the trainer's weights, the
// log-softmax gradient, scatter-add, AdamW and reductions. Double accumulation, fixed order.
#include <cmath>
#include <vector>

#include "ops/grad.h"
#include "ops/ref/ref_util.h"

namespace dsa::ops::ref {

namespace {

inline double load(const void* p, GemmType t, int64_t i) {
  return t == GemmType::BF16 ? double(ld(static_cast<const bf16*>(p)[i])) : double(static_cast<const float*>(p)[i]);
}

}  // namespace

void check(const Gemm& p) {
  DSA_CHECK(p.M >= 0 && p.N >= 0 && p.K >= 0 && p.batch >= 1, "gemm: bad shape M={} N={} K={} batch={}", p.M, p.N,
            p.K, p.batch);
  DSA_CHECK(p.ldc >= p.N, "gemm: ldc {} < N {}", p.ldc, p.N);
  DSA_CHECK(p.lda >= (p.trans_a ? p.M : p.K), "gemm: lda {} too small", p.lda);
  DSA_CHECK(p.ldb >= (p.trans_b ? p.K : p.N), "gemm: ldb {} too small", p.ldb);
  DSA_CHECK(p.c && (p.M * p.N * p.K == 0 || (p.a && p.b)), "gemm: null operand");
}

void gemm(const Gemm& p) {
  check(p);
  for (int64_t bt = 0; bt < p.batch; ++bt) {
    const int64_t oa = bt * p.stride_a, ob = bt * p.stride_b;
    float* c = p.c + bt * p.stride_c;
    for (int64_t m = 0; m < p.M; ++m)
      for (int64_t n = 0; n < p.N; ++n) {
        double acc = p.accumulate ? double(c[m * p.ldc + n]) : 0.0;
        double dot = 0.0;
        for (int64_t k = 0; k < p.K; ++k) {
          const double a = load(p.a, p.ta, oa + (p.trans_a ? k * p.lda + m : m * p.lda + k));
          const double b = load(p.b, p.tb, ob + (p.trans_b ? n * p.ldb + k : k * p.ldb + n));
          dot += a * b;
        }
        c[m * p.ldc + n] = float(acc + dot);
      }
  }
}

void dequant(const Dequant& p) {
  DSA_CHECK(p.R >= 0 && p.C >= 0 && (p.block_rows == 1 || p.block_rows == kBlock), "dequant: bad shape");
  const int64_t cb = ceil_div(p.C, kBlock);
  for (int64_t r = 0; r < p.R; ++r)
    for (int64_t c = 0; c < p.C; ++c) {
      const float v = kFp8Table[p.q[r * p.C + c]] * p.s[(r / p.block_rows) * cb + c / kBlock];
      if (p.to_bf16) static_cast<bf16*>(p.out)[r * p.C + c] = st(v);
      else static_cast<float*>(p.out)[r * p.C + c] = v;
    }
}

void weight_quant(const WeightQuant& p) {
  DSA_CHECK(p.R >= 0 && p.C >= 0, "weight_quant: bad shape");
  const int64_t rb = ceil_div(p.R, kBlock), cb = ceil_div(p.C, kBlock);
  for (int64_t br = 0; br < rb; ++br)
    for (int64_t bc = 0; bc < cb; ++bc) {
      const int64_t r0 = br * kBlock, r1 = std::min(p.R, r0 + kBlock), c0 = bc * kBlock,
                    c1 = std::min(p.C, c0 + kBlock);
      float amax = 0.0f;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(p.x[r * p.C + c]));
      DSA_CHECK(std::isfinite(amax), "weight_quant: non-finite weight in block ({}, {})", br, bc);
      const float s = std::max(amax, 1e-12f) / 448.0f;
      p.s[br * cb + bc] = s;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) p.q[r * p.C + c] = f32_to_fp8(p.x[r * p.C + c] / s);
    }
}

void logits_grad(const LogitsGrad& p) {
  DSA_CHECK(p.M >= 0 && p.V > 0 && p.z && p.target, "logits_grad: bad arguments");
  for (int64_t m = 0; m < p.M; ++m) {
    const float* z = p.z + m * p.V;
    const int32_t t = p.target[m];
    DSA_CHECK(t >= 0 && t < p.V, "logits_grad: target {} outside [0, {})", t, p.V);
    const double lse = log_sum_exp(z, p.V);
    if (p.logp) p.logp[m] = double(z[t]) - lse;
    if (p.dz) {
      const double g = p.g[m];
      float* dz = p.dz + m * p.V;
      for (int64_t v = 0; v < p.V; ++v) {
        const double pr = std::exp(double(z[v]) - lse);
        dz[v] = float(g * ((v == t ? 1.0 : 0.0) - pr));
      }
    }
  }
}

void mask_logits(const MaskLogits& p) {
  DSA_CHECK(p.M >= 0 && p.V > 0 && p.z && p.off && (p.ids || p.off[p.M] == 0), "mask_logits: bad arguments");
  for (int64_t m = 0; m < p.M; ++m) {
    const int64_t b = p.off[m], e = p.off[m + 1];
    DSA_CHECK(b <= e, "mask_logits: row {} has offsets {} > {}", m, b, e);
    if (b == e) continue;
    float* z = p.z + m * p.V;
    int64_t j = b;
    for (int64_t v = 0; v < p.V; ++v) {
      if (j < e && p.ids[j] == v) {
        ++j;
        continue;
      }
      DSA_CHECK(j == e || p.ids[j] > v, "mask_logits: row {}: ids not ascending or outside [0, {})", m, p.V);
      z[v] = -INFINITY;
    }
    DSA_CHECK(j == e, "mask_logits: row {}: ids not ascending or outside [0, {})", m, p.V);
  }
}

void scatter_add_rows(const ScatterAddRows& p) {
  for (int64_t g = 0; g < p.G; ++g) {
    float* d = p.dst + int64_t(p.dst_rows[g]) * p.H;
    for (int32_t i = p.ptr[g]; i < p.ptr[g + 1]; ++i) {
      const float* s = p.src + int64_t(p.src_rows[i]) * p.H;
      for (int64_t h = 0; h < p.H; ++h) d[h] += s[h];
    }
  }
}

void adamw(const AdamW& p) {
  for (int64_t i = 0; i < p.n; ++i) {
    const float g = p.g[i] * p.grad_scale;
    p.m[i] = p.beta1 * p.m[i] + (1.0f - p.beta1) * g;
    p.v[i] = p.beta2 * p.v[i] + (1.0f - p.beta2) * (g * g);
    const float mh = p.m[i] / p.bc1, vh = p.v[i] / p.bc2;
    p.p[i] = p.p[i] - p.lr * (mh / (std::sqrt(vh) + p.eps) + p.wd * p.p[i]);
  }
}

void sum_squares(const SumSquares& p) {
  // Blocks of 4096 summed in double, then the block sums in order (the cpu kernel's order).
  double total = 0.0;
  for (int64_t b0 = 0; b0 < p.n; b0 += 4096) {
    double s = 0.0;
    for (int64_t i = b0; i < std::min(p.n, b0 + 4096); ++i) s += double(p.x[i]) * double(p.x[i]);
    total += s;
  }
  *p.out = total;
}

void axpy(const Axpy& p) {
  for (int64_t i = 0; i < p.n; ++i) p.y[i] = p.y[i] + p.alpha * p.x[i];
}

}  // namespace dsa::ops::ref
