// CUDA vs reference: sparse_mla_decode over the paged 656-byte FP8 latent cache, and
// sparse_mha_prefill, with -1 slots, duplicates and an empty row.
#include <algorithm>
#include <climits>
#include <cstring>
#include <cstdlib>

#include "ops/cuda/tests/test_util.h"

namespace dsa::ops::cuda::test {
namespace {
const OpTable& R = ref_ops();

// Forces sparse_mla_decode's kernel choice (mla_options()) for the scope.
struct ScopedMla {
  MlaOptions old = mla_options();
  ScopedMla(int kernel, int64_t splits) { mla_options() = {kernel, splits}; }
  ~ScopedMla() { mla_options() = old; }
};

// The device op treats idx >= N like -1; the reference rejects it, so it gets -1 there.
std::vector<int32_t> ref_indices(std::vector<int32_t> idx, int64_t N) {
  for (auto& v : idx)
    if (v >= N) v = -1;
  return idx;
}

// big_idx: also ~1/16 of the slots >= N (N + small, INT32_MAX), which the device must skip.
void run_mla(int64_t S, int64_t H, int64_t L, int64_t Rd, int64_t N, int64_t K, bool big_idx = false) {
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
      if (big_idx && rng()() % 16 == 0) v = rng()() % 2 ? INT32_MAX : int32_t(N + rng()() % 1000);
      if (s == S - 1 && S > 1) v = -1;  // a row with no key: zeros
      idx[size_t(s * K + j)] = v;
    }
  std::vector<bf16> o(size_t(S * H * L));
  const float scale = 0.0625f;
  const auto ridx = ref_indices(idx, N);
  R.sparse_mla_decode({qa.data(), qp.data(), cache.data(), ridx.data(), o.data(), S, H, N, K, lay, scale});
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

// The warp-specialised wgmma kernel (mla_ws.cu) takes (kv_lora, rope) == (512, 64) with H % 16 == 0
// on sm_90; 64 heads x 64 keys per CTA and tile. Automatic splits: S1 -> 32 splits (one tile each),
// H64K1000S3 -> several, the others 1.
TEST(CudaMlaDecodeWs, H128K2048S1) { run_mla(1, 128, 512, 64, 20000, 2048, true); }
TEST(CudaMlaDecodeWs, H64K1000S3) { run_mla(3, 64, 512, 64, 5000, 1000, true); }
TEST(CudaMlaDecodeWs, H128K37S3) { run_mla(3, 128, 512, 64, 300, 37, true); }      // one partial tile
TEST(CudaMlaDecodeWs, H128K192S64) { run_mla(64, 128, 512, 64, 4096, 192, true); }  // 128 CTAs, 3 tiles
TEST(CudaMlaDecodeWs, H64K256S64) { run_mla(64, 64, 512, 64, 4096, 256, true); }
TEST(CudaMlaDecodeWs, H96K130S2) { run_mla(2, 96, 512, 64, 1000, 130, true); }     // half-empty head group
TEST(CudaMlaDecodeWs, ForcedOneSplitLongPipeline) {  // 32 tiles in one CTA: stage / parity wrap
  ScopedMla e(0, 1);
  run_mla(2, 128, 512, 64, 8192, 2048, true);
}
TEST(CudaMlaDecodeWs, ForcedUnevenSplits) {  // 16 tiles as 6 + 6 + 4
  ScopedMla e(0, 3);
  run_mla(3, 64, 512, 64, 5000, 1000, true);
}
TEST(CudaMlaDecodeWs, FusedKernelStillWorks) {  // kernel 1 (DSA_MLA_KERNEL=fused): the previous kernel
  ScopedMla e(1, 0);
  run_mla(2, 128, 512, 64, 8192, 2048, true);
}

// One valid key per query row (the rest -1 or >= N), so p = 1 and o = bf16(dequantised latent) of
// that key exactly: checks the FP8 dequantisation bit for bit over all finite e4m3 codes (subnormals,
// +-0) for rows whose scales are all powers of two (bf16 fast path), powers of two and 1.5 * 2^-6
// (fast path, bf16-exact), or include 0.0123 and 2^10 (fp32 path); the last row has no key (zeros).
// The valid rows are 3, 10, 17, 24, 31: kinds 0, 1, 2, 0, 1.
void run_mla_single_key(int64_t H, int64_t splits) {  // splits 0: automatic
  ScopedMla e(0, splits);
  const int64_t S = 6, N = 40, K = 300, L = 512, Rd = 64;
  LatentLayout lay{L, Rd};
  const int64_t rb = lay.row_bytes();
  std::vector<uint8_t> cache(size_t(N * rb));
  auto row_scale = [](int64_t r, int64_t b) {
    switch (r % 3) {
      case 0: return std::ldexp(1.0f, int(-7 - b));
      case 1: return b % 2 ? std::ldexp(1.0f, -5) : 1.5f * std::ldexp(1.0f, -6);
      default: {
        const float k[4] = {0.0123f, 1024.0f, std::ldexp(1.0f, -7), 3.3f};
        return k[b];
      }
    }
  };
  for (int64_t r = 0; r < N; ++r) {
    for (int64_t i = 0; i < L; ++i) {
      uint8_t c = uint8_t((r * 37 + i) & 0xff);
      if ((c & 0x7f) == 0x7f) c ^= 1;  // no NaN codes
      cache[size_t(r * rb + i)] = c;
    }
    for (int64_t b = 0; b < L / 128; ++b) {
      const float sc = row_scale(r, b);
      std::memcpy(&cache[size_t(r * rb + lay.scale_off() + 4 * b)], &sc, 4);
    }
    auto pe = rand_bf16(size_t(Rd));
    std::memcpy(&cache[size_t(r * rb + lay.rope_off())], pe.data(), size_t(2 * Rd));
  }
  auto qa = rand_bf16(size_t(S * H * L), 0.5f), qp = rand_bf16(size_t(S * H * Rd), 0.5f);
  std::vector<int32_t> idx(size_t(S * K), -1);
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t j = s; j < K; j += 7) idx[size_t(s * K + j)] = int32_t(N + j);  // >= N: skipped
    if (s < S - 1) idx[size_t(s * K + (s * 97 + 11) % K)] = int32_t((s * 7 + 3) % N);
  }
  std::vector<bf16> o(size_t(S * H * L));
  const auto ridx = ref_indices(idx, N);
  R.sparse_mla_decode({qa.data(), qp.data(), cache.data(), ridx.data(), o.data(), S, H, N, K, lay, 0.07f});
  DevBuf<bf16> dqa(qa), dqp(qp), dout(o.size());
  DevBuf<uint8_t> dc(cache);
  DevBuf<int32_t> di(idx);
  dout.poison();
  sparse_mla_decode({dqa.p, dqp.p, dc.p, di.p, dout.p, S, H, N, K, lay, 0.07f}, nullptr);
  auto got = dout.down();
  for (size_t i = 0; i < o.size(); ++i) ASSERT_EQ(got[i].bits, o[i].bits) << i;
}
TEST(CudaMlaDecodeWs, SingleKeyExactH64) { run_mla_single_key(64, 0); }
TEST(CudaMlaDecodeWs, SingleKeyExactH128OneSplit) { run_mla_single_key(128, 1); }

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
