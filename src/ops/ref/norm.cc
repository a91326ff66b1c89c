// Reference RMSNorm (with fused residual add), LayerNorm and SwiGLU combine (spec §3.4, §3.5,
// §8.1).
#include <cmath>
#include <vector>

#include "ops/ref/ref_util.h"

namespace dsa::ops::ref {

void rms_norm(const RmsNorm& p) {
  check(p);
  std::vector<float> r(size_t(p.D));
  for (int64_t m = 0; m < p.M; ++m) {
    const bf16* x = p.x + m * p.D;
    for (int64_t d = 0; d < p.D; ++d) r[size_t(d)] = ld(x[d]);
    if (p.residual) {
      bf16* res = p.residual + m * p.D;
      for (int64_t d = 0; d < p.D; ++d) {
        r[size_t(d)] = r[size_t(d)] + ld(res[d]);
        res[d] = st(r[size_t(d)]);
      }
    }
    double ss = 0.0;
    for (int64_t d = 0; d < p.D; ++d) ss += double(r[size_t(d)]) * double(r[size_t(d)]);
    const float ms = float(ss / double(p.D));
    const float inv = 1.0f / std::sqrt(ms + p.eps);
    bf16* y = p.y + m * p.D;
    for (int64_t d = 0; d < p.D; ++d) y[d] = st(p.w[d] * (r[size_t(d)] * inv));
  }
}

void layer_norm(const LayerNorm& p) {
  check(p);
  std::vector<float> r(size_t(p.D));
  for (int64_t m = 0; m < p.M; ++m) {
    const bf16* x = p.x + m * p.D;
    double sum = 0.0;
    for (int64_t d = 0; d < p.D; ++d) {
      r[size_t(d)] = ld(x[d]);
      sum += r[size_t(d)];
    }
    const double mean_d = sum / double(p.D);
    double var = 0.0;
    for (int64_t d = 0; d < p.D; ++d) var += (r[size_t(d)] - mean_d) * (r[size_t(d)] - mean_d);
    const float mean = float(mean_d);
    const float inv = 1.0f / std::sqrt(float(var / double(p.D)) + p.eps);
    bf16* y = p.y + m * p.D;
    for (int64_t d = 0; d < p.D; ++d) y[d] = st(((r[size_t(d)] - mean) * inv) * p.w[d] + p.b[d]);
  }
}

void silu_mul(const SiluMul& p) {
  check(p);
  for (int64_t i = 0; i < p.M * p.N; ++i) {
    const float g = ld(p.g[i]);
    const float silu = g / (1.0f + std::exp(-g));
    p.h[i] = st(silu * ld(p.u[i]));
  }
}

}  // namespace dsa::ops::ref
