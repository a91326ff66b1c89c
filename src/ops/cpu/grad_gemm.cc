// CPU GEMM of the trainer (ops/grad.h Gemm): op(B) packed once into fp32 [K, N], op(A) packed per
// block of 4 rows, fp32 fused multiply-add in increasing k for every output element (so the
// result of a row never depends on the other rows or on the thread split), Highway SIMD over N,
// tiles of (4 rows x 4 vectors) spread over the thread pool.
#include <algorithm>
#include <vector>

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS HWY_SSSE3
#endif
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/cpu/grad_gemm.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/cpu/simd-inl.h"

#include "base/thread_pool.h"
#include "hwy/aligned_allocator.h"
#include "ops/cpu/cpu_ops.h"
#include "ops/grad.h"
#include "ops/ref/ref_util.h"

HWY_BEFORE_NAMESPACE();
namespace dsa::ops::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;

inline float load_elem(const void* p, GemmType t, int64_t i) {
  return t == GemmType::BF16 ? bf16_to_f32(static_cast<const bf16*>(p)[i]) : static_cast<const float*>(p)[i];
}

constexpr int kRows = 4;

void GemmImpl(const Gemm& p) {
  const DF df;
  const int64_t L = int64_t(hn::Lanes(df)), NV = 4 * L;  // output columns per tile
  const int64_t M = p.M, N = p.N, K = p.K;
  const int64_t Np = (N + NV - 1) / NV * NV;
  hwy::AlignedFreeUniquePtr<float[]> b = hwy::AllocateAligned<float>(size_t(std::max<int64_t>(1, K * Np)));
  for (int64_t bt = 0; bt < p.batch; ++bt) {
    const int64_t oa = bt * p.stride_a, ob = bt * p.stride_b;
    float* C = p.c + bt * p.stride_c;
    // op(B) as fp32 [K, Np], zero padded.
    parallel_for(K, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        float* row = b.get() + k * Np;
        for (int64_t n = 0; n < N; ++n)
          row[n] = load_elem(p.b, p.tb, ob + (p.trans_b ? n * p.ldb + k : k * p.ldb + n));
        std::fill(row + N, row + Np, 0.0f);
      }
    });
    const int64_t row_blocks = (M + kRows - 1) / kRows, col_tiles = Np / NV;
    parallel_for(row_blocks * col_tiles, [&](int64_t t0, int64_t t1) {
      std::vector<float> a(size_t(kRows * std::max<int64_t>(K, 1)));
      int64_t packed = -1;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t rb = t / col_tiles, ct = t % col_tiles;
        const int64_t m0 = rb * kRows, nr = std::min<int64_t>(kRows, M - m0), n0 = ct * NV;
        if (packed != rb) {
          for (int64_t r = 0; r < kRows; ++r)
            for (int64_t k = 0; k < K; ++k)
              a[size_t(r * K + k)] =
                  r < nr ? load_elem(p.a, p.ta, oa + (p.trans_a ? k * p.lda + (m0 + r) : (m0 + r) * p.lda + k)) : 0.0f;
          packed = rb;
        }
        hn::Vec<DF> acc[kRows][4];
        for (int r = 0; r < kRows; ++r)
          for (int v = 0; v < 4; ++v) acc[r][v] = hn::Zero(df);
        for (int64_t k = 0; k < K; ++k) {
          const float* brow = b.get() + k * Np + n0;
          const auto b0 = hn::Load(df, brow), b1 = hn::Load(df, brow + L), b2 = hn::Load(df, brow + 2 * L),
                     b3 = hn::Load(df, brow + 3 * L);
          for (int r = 0; r < kRows; ++r) {
            const auto av = hn::Set(df, a[size_t(r * K + k)]);
            acc[r][0] = hn::MulAdd(av, b0, acc[r][0]);
            acc[r][1] = hn::MulAdd(av, b1, acc[r][1]);
            acc[r][2] = hn::MulAdd(av, b2, acc[r][2]);
            acc[r][3] = hn::MulAdd(av, b3, acc[r][3]);
          }
        }
        HWY_ALIGN float out[4 * 64];
        for (int64_t r = 0; r < nr; ++r) {
          for (int v = 0; v < 4; ++v) hn::Store(acc[r][v], df, out + v * L);
          float* c = C + (m0 + r) * p.ldc + n0;
          const int64_t nn = std::min<int64_t>(NV, N - n0);
          for (int64_t j = 0; j < nn; ++j) c[j] = p.accumulate ? c[j] + out[j] : out[j];
        }
      }
    });
  }
}

}  // namespace dsa::ops::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa::ops::cpu {
HWY_EXPORT(GemmImpl);

void gemm(const Gemm& p) {
  ref::check(p);
  if (p.M == 0 || p.N == 0) return;
  if (p.K == 0) {
    for (int64_t bt = 0; bt < p.batch; ++bt)
      for (int64_t m = 0; m < p.M; ++m)
        for (int64_t n = 0; n < p.N; ++n)
          if (!p.accumulate) p.c[bt * p.stride_c + m * p.ldc + n] = 0.0f;
    return;
  }
  HWY_DYNAMIC_DISPATCH(GemmImpl)(p);
}
}  // namespace dsa::ops::cpu
#endif
