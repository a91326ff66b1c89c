// Reference RoPE (interleaved and half-split pairs, spec §3.6) and Hadamard rotation (spec §3.7).
#include <cmath>
#include <vector>

#include "ops/ref/ref_util.h"

namespace dsa::ops::ref {

void rope(const Rope& p) {
  check(p);
  const int64_t half = p.rope_dim / 2;
  for (int64_t m = 0; m < p.M; ++m) {
    const float* c = p.cos + int64_t(p.pos[m]) * half;
    const float* s = p.sin + int64_t(p.pos[m]) * half;
    for (int64_t h = 0; h < p.H; ++h) {
      bf16* x = p.x + (m * p.H + h) * p.row_stride + p.off;
      for (int64_t i = 0; i < half; ++i) {
        const int64_t i0 = p.interleaved ? 2 * i : i;
        const int64_t i1 = p.interleaved ? 2 * i + 1 : i + half;
        const float a = ld(x[i0]), b = ld(x[i1]);
        const float y0 = a * c[i] - b * s[i];
        const float y1 = a * s[i] + b * c[i];
        x[i0] = st(y0);
        x[i1] = st(y1);
      }
    }
  }
}

void hadamard(const Hadamard& p) {
  check(p);
  const float scale = float(1.0 / std::sqrt(double(p.n)));
  std::vector<float> v(size_t(p.n));
  for (int64_t m = 0; m < p.M; ++m) {
    bf16* x = p.x + m * p.n;
    for (int64_t i = 0; i < p.n; ++i) v[size_t(i)] = ld(x[i]);
    // Sylvester order: butterflies (a, b) -> (a + b, a - b) at strides 1, 2, 4, ...
    for (int64_t len = 1; len < p.n; len *= 2) {
      for (int64_t i = 0; i < p.n; i += 2 * len) {
        for (int64_t j = i; j < i + len; ++j) {
          const float a = v[size_t(j)], b = v[size_t(j + len)];
          v[size_t(j)] = a + b;
          v[size_t(j + len)] = a - b;
        }
      }
    }
    for (int64_t i = 0; i < p.n; ++i) x[i] = st(v[size_t(i)] * scale);
  }
}

}  // namespace dsa::ops::ref
