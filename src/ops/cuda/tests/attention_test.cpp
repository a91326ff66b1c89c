// CUDA vs reference: sparse_mla_decode over the paged 656-byte FP8 latent cache, and
// sparse_mha_prefill, with -1 slots, duplicates and an empty row.
#include <algorithm>

#include "ops/cuda/tests/test_util.h"

namespace dsa::ops::cuda::test {
namespace {
const OpTable& R = ref_ops();

void run_mla(int64_t S, int64_t H, int64_t L, int64_t Rd, int64_t N, int64_t K) {
  LatentLayout lay{L, Rd};
  const int64_t rb = lay.row_bytes(), nb = ceil_div(L, 128);
  std::vector<uint8_t> cache(size_t(N * rb));
  float cmax = 0;
  for (int64_t r = 0; r < N; ++r) {
    auto c = rand_fp8(size_t(L));
    std::copy(c.begin(), c.end(), cache.begin() + r * rb);
    for (int64_t b = 0; b < nb; ++b) {
      const float s = std::ldexp(1.0f, int(rng()() % 4) - 7);
      std::memcpy(&cache[size_t(r * rb + lay.scale_off() + 4 * b)], &s, 4);
      for (int64_t i = b * 128; i < std::min(L, (b + 1) * 128); ++i)
        cmax = std::max(cmax, std::fabs(fp8_to_f32(c[size_t(i)]) * s));
    }
    auto pe = rand_bf16(size_t(Rd));
    std::memcpy(&cache[size_t(r * rb + lay.rope_off())], pe.data(), size_t(2 * Rd));
  }
  auto qa = rand_bf16(size_t(S * H * L), 0.5f), qp = rand_bf16(size_t(S * H * Rd), 0.5f);
  std::vector<int32_t> idx(size_t(S * K));
  for (int64_t s = 0; s < S; ++s)
    for (int64_t j = 0; j < K; ++j) {
      int32_t v = int32_t(rng()() % N);
      if (rng()() % 10 == 0) v = -1;
      if (s == S - 1 && S > 1) v = -1;  // a row with no key: zeros
      idx[size_t(s * K + j)] = v;
    }
  std::vector<bf16> o(size_t(S * H * L));
  const float scale = 0.0625f;
  R.sparse_mla_decode({qa.data(), qp.data(), cache.data(), idx.data(), o.data(), S, H, N, K, lay, scale});
  DevBuf<bf16> dqa(qa), dqp(qp), dout(o.size());
  DevBuf<uint8_t> dc(cache);
  DevBuf<int32_t> di(idx);
  dout.poison();
  sparse_mla_decode({dqa.p, dqp.p, dc.p, di.p, dout.p, S, H, N, K, lay, scale}, nullptr);
  auto got = dout.down();
  // A score may land 1 bf16 ulp apart (other fp32 dot order), moving that key's p by <= 2^-8
  // relative; o is a convex combination of latents bounded by cmax; then bf16 rounding.
  // The fused kernel's online softmax rounds bf16(exp(s - m_split)) before the fp32 normalisation
  // instead of bf16(exp(s - M) / sum): each p_j is within 2^-9 (+ fp32 ulps) of the exact value
  // either way, so |Δp_j| <= 2^-8 p_j and |Δo| <= 2^-8 Σ p_j |c_j| <= 2^-8 cmax: one more cmax 2^-8.
  double num = 0, den = 0;
  for (size_t i = 0; i < o.size(); ++i) {
    const float r = f(o[i]), g = f(got[i]);
    ASSERT_NEAR(g, r, std::fabs(r) * std::ldexp(1.0, -7) + cmax * std::ldexp(1.0, -7)) << i;
    num += (g - r) * (g - r);
    den += r * r;
  }
  EXPECT_LT(std::sqrt(num / std::max(den, 1e-30)), 4e-3);
}

TEST(CudaMlaDecode, V32Dims) { run_mla(2, 128, 512, 64, 8192, 2048); }
TEST(CudaMlaDecode, Irregular) { run_mla(3, 32, 256, 32, 700, 300); }
TEST(CudaMlaDecode, FewKeys) { run_mla(2, 16, 128, 16, 50, 7); }
TEST(CudaMlaDecode, Batch1Split) { run_mla(1, 128, 512, 64, 20000, 2048); }  // 64 splits + combine
TEST(CudaMlaDecode, Batch64NoSplit) { run_mla(64, 128, 512, 64, 4096, 300); }
TEST(CudaMlaDecode, TwoPassFallback) { run_mla(2, 32, 192, 16, 500, 100); }

TEST(CudaMhaPrefill, Irregular) {
  const int64_t S = 5, T = 300, H = 4, dqk = 192, dv = 128, K = 100;
  auto q = rand_bf16(size_t(S * H * dqk), 0.3f), k = rand_bf16(size_t(T * H * dqk), 0.3f);
  auto v = rand_bf16(size_t(T * H * dv));
  std::vector<int32_t> idx(size_t(S * K));
  for (auto& x : idx) x = rng()() % 7 == 0 ? -1 : int32_t(rng()() % T);
  std::vector<bf16> o(size_t(S * H * dv));
  R.sparse_mha_prefill({q.data(), k.data(), v.data(), idx.data(), o.data(), S, T, H, dqk, dv, K, 0.07f});
  DevBuf<bf16> dq(q), dk(k), dvv(v), dout(o.size());
  DevBuf<int32_t> di(idx);
  dout.poison();
  sparse_mha_prefill({dq.p, dk.p, dvv.p, di.p, dout.p, S, T, H, dqk, dv, K, 0.07f}, nullptr);
  auto got = dout.down();
  float vmax = 0;
  for (auto x : v) vmax = std::max(vmax, std::fabs(f(x)));
  for (size_t i = 0; i < o.size(); ++i)  // same argument as the MLA decode bound
    ASSERT_NEAR(f(got[i]), f(o[i]), std::fabs(f(o[i])) * std::ldexp(1.0, -7) + vmax * std::ldexp(1.0, -8)) << i;
}

}  // namespace
}  // namespace dsa::ops::cuda::test
