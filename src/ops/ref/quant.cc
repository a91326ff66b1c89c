// Reference act_quant, fp8 block GEMM (plain and grouped by expert) and fp32 linear (spec §3.1, §3.2, §4 LM head, §7 step 8).
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/ref/ref_util.h"

namespace dsa::ops::ref {

void act_quant(const ActQuant& p) {
  check(p);
  const int64_t nb = ceil_div(p.K, kBlock);
  for (int64_t m = 0; m < p.M; ++m) {
    const bf16* x = p.x + m * p.K;
    fp8* q = p.q + m * p.K;
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t k0 = b * kBlock, k1 = std::min(p.K, k0 + kBlock);
      float amax = 0.0f;
      for (int64_t k = k0; k < k1; ++k) amax = std::fmax(amax, std::fabs(ld(x[k])));
      const float s = ue8m0_scale_for_amax(std::fmax(amax, 1e-4f));
      p.s[m * nb + b] = s;
      for (int64_t k = k0; k < k1; ++k) {
        float v = ld(x[k]) / s;
        if (v > 448.0f) v = 448.0f;
        if (v < -448.0f) v = -448.0f;
        q[k] = f32_to_fp8(v);
      }
    }
  }
}

void fp8_gemm(const Fp8Gemm& p) {
  check(p);
  const int64_t nb = ceil_div(p.K, kBlock);
  std::vector<float> a(size_t(p.M * p.K)), w(size_t(p.K));
  for (int64_t i = 0; i < p.M * p.K; ++i) a[size_t(i)] = kFp8Table[p.a[i]];
  for (int64_t n = 0; n < p.N; ++n) {
    for (int64_t k = 0; k < p.K; ++k) w[size_t(k)] = kFp8Table[p.w[n * p.K + k]];
    const float* ws = p.w_s + (n / kBlock) * nb;
    for (int64_t m = 0; m < p.M; ++m) {
      const float* am = a.data() + m * p.K;
      const float* as = p.a_s + m * nb;
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t k0 = b * kBlock, k1 = std::min(p.K, k0 + kBlock);
        float dot = 0.0f;
        for (int64_t k = k0; k < k1; ++k) dot += am[k] * w[size_t(k)];
        const float scale = as[b] * ws[b];
        acc += dot * scale;
      }
      p.y[m * p.ldy + n] = st(acc);
    }
  }
}

void grouped_fp8_gemm_by_group(const GroupedFp8Gemm& p, void (*gemm)(const Fp8Gemm&)) {
  DSA_CHECK(p.G > 0 && p.R >= 0 && p.N > 0 && p.K > 0, "grouped_fp8_gemm: bad dims G={} R={} N={} K={}", p.G, p.R,
            p.N, p.K);
  DSA_CHECK(p.ldy >= p.N, "grouped_fp8_gemm: ldy={} < N={}", p.ldy, p.N);
  DSA_CHECK(p.a && p.a_s && p.offsets && p.w && p.w_s && p.y, "grouped_fp8_gemm: null pointer");
  DSA_CHECK(p.offsets[0] == 0 && p.offsets[p.G] <= p.R, "grouped_fp8_gemm: offsets[0]={} offsets[G]={} (R={})",
            p.offsets[0], p.offsets[p.G], p.R);
  for (int64_t g = 0; g < p.G; ++g)
    DSA_CHECK(p.offsets[g] <= p.offsets[g + 1], "grouped_fp8_gemm: offsets decrease at group {}", g);
  if (p.rows)
    for (int64_t r = 0; r < p.offsets[p.G]; ++r)
      DSA_CHECK(p.rows[r] >= 0, "grouped_fp8_gemm: rows[{}] = {}", r, p.rows[r]);
  const int64_t nb = ceil_div(p.K, kBlock);
  std::vector<fp8> a;
  std::vector<float> a_s;
  for (int64_t g = 0; g < p.G; ++g) {
    const int64_t r0 = p.offsets[g], M = p.offsets[g + 1] - r0;
    if (M == 0) continue;
    DSA_CHECK(p.w[g] && p.w_s[g], "grouped_fp8_gemm: group {} has no weights", g);
    const fp8* ga = p.a + r0 * p.K;
    const float* gs = p.a_s + r0 * nb;
    if (p.rows) {
      a.resize(size_t(M * p.K));
      a_s.resize(size_t(M * nb));
      for (int64_t i = 0; i < M; ++i) {
        const int64_t src = p.rows[r0 + i];
        std::memcpy(a.data() + i * p.K, p.a + src * p.K, size_t(p.K));
        std::memcpy(a_s.data() + i * nb, p.a_s + src * nb, size_t(nb) * 4);
      }
      ga = a.data();
      gs = a_s.data();
    }
    gemm({ga, gs, p.w[g], p.w_s[g], p.y + r0 * p.ldy, M, p.N, p.K, p.ldy});
  }
}

void grouped_fp8_gemm(const GroupedFp8Gemm& p) { grouped_fp8_gemm_by_group(p, &fp8_gemm); }

void linear_f32(const LinearF32& p) {
  check(p);
  std::vector<double> w(size_t(p.K));
  for (int64_t n = 0; n < p.N; ++n) {
    for (int64_t k = 0; k < p.K; ++k) w[size_t(k)] = ld(p.w[n * p.K + k]);
    for (int64_t m = 0; m < p.M; ++m) {
      const float* x = p.x + m * p.K;
      double acc = 0.0;
      for (int64_t k = 0; k < p.K; ++k) acc += double(x[k]) * w[size_t(k)];
      p.y[m * p.N + n] = float(acc);
    }
  }
}

}  // namespace dsa::ops::ref
