// Reference backward of the elementwise / row ops (ops/grad.h): RMSNorm with the residual
// stream, LayerNorm, RoPE (both layouts), Hadamard, SwiGLU. Row sums in double.
#include <cmath>
#include <vector>

#include "ops/grad.h"
#include "ops/ref/ref_util.h"

namespace dsa::ops::ref {

void rms_norm_bwd(const RmsNormBwd& p) {
  DSA_CHECK(p.M >= 0 && p.D > 0, "rms_norm_bwd: bad shape");
  std::vector<double> r(size_t(p.D));
  for (int64_t m = 0; m < p.M; ++m) {
    const int64_t o = m * p.D;
    double ss = 0.0;
    for (int64_t d = 0; d < p.D; ++d) {
      // The forward's fp32 sum r = fp32(x) + fp32(res_in).
      const float rf = p.res_in ? ld(p.x[o + d]) + ld(p.res_in[o + d]) : ld(p.x[o + d]);
      r[size_t(d)] = rf;
      ss += r[size_t(d)] * r[size_t(d)];
    }
    const double inv = 1.0 / std::sqrt(ss / double(p.D) + double(p.eps));
    double dot = 0.0;  // Σ w dy r
    for (int64_t d = 0; d < p.D; ++d) dot += double(p.w[d]) * double(p.dy[o + d]) * r[size_t(d)];
    const double c = dot * inv * inv * inv / double(p.D);
    for (int64_t d = 0; d < p.D; ++d) {
      const double dy = p.dy[o + d];
      const double g = double(p.w[d]) * dy * inv - r[size_t(d)] * c;
      const double dres = p.dres ? double(p.dres[o + d]) : 0.0;
      if (p.dw) p.dw[d] = float(double(p.dw[d]) + dy * r[size_t(d)] * inv);
      p.dx[o + d] = float(g + dres);
    }
  }
}

void layer_norm_bwd(const LayerNormBwd& p) {
  DSA_CHECK(p.M >= 0 && p.D > 0, "layer_norm_bwd: bad shape");
  std::vector<double> xh(size_t(p.D)), g(size_t(p.D));
  for (int64_t m = 0; m < p.M; ++m) {
    const int64_t o = m * p.D;
    double sum = 0.0;
    for (int64_t d = 0; d < p.D; ++d) sum += ld(p.x[o + d]);
    const double mean = sum / double(p.D);
    double var = 0.0;
    for (int64_t d = 0; d < p.D; ++d) var += (ld(p.x[o + d]) - mean) * (ld(p.x[o + d]) - mean);
    const double inv = 1.0 / std::sqrt(var / double(p.D) + double(p.eps));
    double mg = 0.0, mgx = 0.0;
    for (int64_t d = 0; d < p.D; ++d) {
      xh[size_t(d)] = (ld(p.x[o + d]) - mean) * inv;
      g[size_t(d)] = double(p.dy[o + d]) * double(p.w[d]);
      mg += g[size_t(d)];
      mgx += g[size_t(d)] * xh[size_t(d)];
    }
    mg /= double(p.D);
    mgx /= double(p.D);
    for (int64_t d = 0; d < p.D; ++d) {
      const double dy = p.dy[o + d];
      if (p.dw) p.dw[d] = float(double(p.dw[d]) + dy * xh[size_t(d)]);
      if (p.db) p.db[d] = float(double(p.db[d]) + dy);
      p.dx[o + d] = float(inv * (g[size_t(d)] - mg - xh[size_t(d)] * mgx));
    }
  }
}

void rope_bwd(const RopeBwd& p) {
  const int64_t half = p.rope_dim / 2;
  DSA_CHECK(p.rope_dim % 2 == 0 && p.off + p.rope_dim <= p.row_stride, "rope_bwd: bad layout");
  for (int64_t m = 0; m < p.M; ++m) {
    const float* c = p.cos + int64_t(p.pos[m]) * half;
    const float* s = p.sin + int64_t(p.pos[m]) * half;
    for (int64_t h = 0; h < p.H; ++h) {
      float* x = p.dx + (m * p.H + h) * p.row_stride + p.off;
      for (int64_t i = 0; i < half; ++i) {
        float* a = p.interleaved ? x + 2 * i : x + i;
        float* b = p.interleaved ? x + 2 * i + 1 : x + i + half;
        const double g0 = *a, g1 = *b;
        // Forward: y0 = x0 c - x1 s, y1 = x0 s + x1 c; backward is the transpose.
        *a = float(g0 * c[i] + g1 * s[i]);
        *b = float(-g0 * s[i] + g1 * c[i]);
      }
    }
  }
}

void hadamard_f32(const HadamardF32& p) {
  DSA_CHECK(p.n > 0 && (p.n & (p.n - 1)) == 0, "hadamard_f32: n = {} is not a power of two", p.n);
  std::vector<double> v(size_t(p.n));
  const double scale = 1.0 / std::sqrt(double(p.n));
  for (int64_t m = 0; m < p.M; ++m) {
    float* x = p.x + m * p.n;
    for (int64_t i = 0; i < p.n; ++i) v[size_t(i)] = x[i];
    for (int64_t len = 1; len < p.n; len <<= 1)
      for (int64_t i = 0; i < p.n; i += 2 * len)
        for (int64_t j = i; j < i + len; ++j) {
          const double a = v[size_t(j)], b = v[size_t(j + len)];
          v[size_t(j)] = a + b;
          v[size_t(j + len)] = a - b;
        }
    for (int64_t i = 0; i < p.n; ++i) x[i] = float(v[size_t(i)] * scale);
  }
}

void silu_mul_bwd(const SiluMulBwd& p) {
  for (int64_t i = 0; i < p.M * p.N; ++i) {
    const double g = ld(p.g[i]), u = ld(p.u[i]), dh = p.dh[i];
    const double sg = 1.0 / (1.0 + std::exp(-g));
    p.dg[i] = float(dh * u * sg * (1.0 + g * (1.0 - sg)));
    p.du[i] = float(dh * g * sg);
  }
}

}  // namespace dsa::ops::ref
