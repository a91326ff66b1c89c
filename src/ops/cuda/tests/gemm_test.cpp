// CUDA vs reference: fp8_gemm, linear_f32, head_matmul on regular and irregular shapes.
#include "ops/cuda/tests/test_util.h"

namespace dsa::ops::cuda::test {
namespace {
const OpTable& R = ref_ops();

TEST(CudaGemm, Fp8Gemm) {
  // Each 128-term dot runs on tensor cores, other order: the FP8 wgmma kernel accumulates below
  // fp32 precision, |dot err| <= 2^-12 * Σ|a w| per block (generous bound); the exact kernels (f16
  // wgmma, mma.sync) keep products exact in fp32: 2^-16. The scale/accumulate steps are the
  // reference's own fp32 ops. Then bf16 output: 1 ulp on top.
  struct Shape { int64_t M, N, K, ldy; };
  // wgmma token tiles 16/32/64/128 (few weight rows shrink the tile) and 2 warpgroups (M > 128,
  // many rows), partial tiles in M, N and K, odd ldy (scalar epilogue); K = 300 is not a multiple
  // of 16 (mma.sync fallback); M <= 16 is the decode kernel.
  for (Shape sh : {Shape{64, 256, 512, 256}, Shape{37, 200, 300, 210}, Shape{130, 129, 7168, 129},
                   Shape{1, 384, 1536, 384}, Shape{16, 64, 128, 64}, Shape{29, 130, 208, 131},
                   Shape{100, 256, 2048, 264}, Shape{300, 200, 1040, 200}, Shape{5, 7, 48, 7},
                   Shape{100, 20000, 128, 20000} /* 1 x 128 */, Shape{200, 8448, 128, 8448} /* 2 x 128 */}) {
    const int64_t nb = ceil_div(sh.K, 128), nbn = ceil_div(sh.N, 128);
    auto a = rand_fp8(size_t(sh.M * sh.K)), w = rand_fp8(size_t(sh.N * sh.K));
    std::vector<float> as(size_t(sh.M * nb)), ws(size_t(nbn * nb));
    for (auto& v : as) v = std::ldexp(1.0f, int(rng()() % 8) - 10);
    for (auto& v : ws) v = std::ldexp(1.0f, int(rng()() % 8) - 10);
    std::vector<bf16> y(size_t(sh.M * sh.ldy));
    R.fp8_gemm({a.data(), as.data(), w.data(), ws.data(), y.data(), sh.M, sh.N, sh.K, sh.ldy});
    DevBuf<fp8> da(a), dw(w);
    DevBuf<float> das(as), dws(ws);
    for (int km = 0; km < 3; ++km) {  // exact f16 wgmma, exact mma.sync, FP8 wgmma
      const bool wg = km == 2;
      SCOPED_TRACE(km == 0 ? "f16 wgmma" : km == 1 ? "mma.sync" : "fp8 wgmma");
      Fp8Mode mode(wg, km == 1);
      DevBuf<bf16> dy(y.size());
      dy.poison();
      fp8_gemm({da.p, das.p, dw.p, dws.p, dy.p, sh.M, sh.N, sh.K, sh.ldy}, nullptr);
      auto yo = dy.down();
      for (int64_t m = 0; m < sh.M; ++m)
        for (int64_t n = 0; n < sh.N; ++n) {
          double bound = 0;
          for (int64_t k = 0; k < sh.K; ++k)
            bound += std::fabs(fp8_to_f32(a[m * sh.K + k]) * fp8_to_f32(w[n * sh.K + k])) *
                     as[m * nb + k / 128] * ws[(n / 128) * nb + k / 128];
          const float ref = f(y[m * sh.ldy + n]), got = f(yo[m * sh.ldy + n]);
          ASSERT_NEAR(got, ref, bound * std::ldexp(1.0, wg ? -12 : -16) + std::fabs(ref) * std::ldexp(1.0, -7))
              << m << "," << n << " shape " << sh.M << "x" << sh.N << "x" << sh.K;
        }
    }
  }
}

// M <= 16 takes the decode kernel (fp8_gemv_kernel), M > 16 the tiled mma.sync one (forced: the
// default for M > 16 is f16 wgmma); per output row both run the same instruction sequence, so the
// first rows of an M = 17 product are the bits of the small-M product. K = 16384 / 18432 are V3.2's wo and dense w2; K = 300 / 208 take the scalar loads.
TEST(CudaGemm, Fp8GemvBitIdenticalToTiledKernel) {
  struct Shape { int64_t M, N, K; };
  for (Shape sh : {Shape{1, 384, 1536}, Shape{3, 129, 16384}, Shape{16, 200, 300}, Shape{8, 7, 208},
                   Shape{2, 1000, 18432}, Shape{11, 64, 128}}) {
    const int64_t M2 = 17, nb = ceil_div(sh.K, 128), nbn = ceil_div(sh.N, 128);
    auto a = rand_fp8(size_t(M2 * sh.K)), w = rand_fp8(size_t(sh.N * sh.K));
    std::vector<float> as(size_t(M2 * nb)), ws(size_t(nbn * nb));
    for (auto& v : as) v = std::ldexp(1.0f, int(rng()() % 8) - 10) * (rng()() % 3 ? 1.0f : 1.37f);
    for (auto& v : ws) v = std::ldexp(1.0f, int(rng()() % 8) - 10);
    DevBuf<fp8> da(a), dw(w);
    DevBuf<float> das(as), dws(ws);
    DevBuf<bf16> small(size_t(sh.M * sh.N)), big(size_t(M2 * sh.N));
    small.poison();
    big.poison();
    fp8_gemm({da.p, das.p, dw.p, dws.p, small.p, sh.M, sh.N, sh.K, sh.N}, nullptr);
    {
      Fp8Mode tiled(false, true);
      fp8_gemm({da.p, das.p, dw.p, dws.p, big.p, M2, sh.N, sh.K, sh.N}, nullptr);
    }
    const auto ys = small.down(), yb = big.down();
    for (int64_t i = 0; i < sh.M * sh.N; ++i)
      ASSERT_EQ(ys[size_t(i)].bits, yb[size_t(i)].bits) << i << " shape " << sh.M << "x" << sh.N << "x" << sh.K;
  }
}

TEST(CudaGemm, LinearF32) {  // fp32 accumulate vs double: K * 2^-24 * Σ|x w|
  // GEMV path (M <= 8, K % 8 == 0) and the tiled kernel (K % 8 != 0 or M > 8).
  struct Shape { int64_t M, N, K; };
  for (Shape sh : {Shape{7, 33, 300}, Shape{1, 1000, 7168}, Shape{3, 77, 256}, Shape{8, 9, 64}, Shape{12, 40, 128}}) {
    const int64_t M = sh.M, N = sh.N, K = sh.K;
    auto x = rand_f32(size_t(M * K), -1, 1);
    auto w = rand_bf16(size_t(N * K));
    std::vector<float> y(size_t(M * N));
    R.linear_f32({x.data(), w.data(), y.data(), M, N, K});
    DevBuf<float> dx(x), dy(y.size());
    DevBuf<bf16> dw(w);
    dy.poison();
    linear_f32({dx.p, dw.p, dy.p, M, N, K}, nullptr);
    auto yo = dy.down();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double bound = 0;
        for (int64_t k = 0; k < K; ++k) bound += std::fabs(x[m * K + k] * f(w[n * K + k]));
        ASSERT_NEAR(yo[m * N + n], y[m * N + n], bound * K * std::ldexp(1.0, -24)) << m << "," << n << " K " << K;
      }
  }
}

TEST(CudaGemm, HeadMatmul) {  // fp32 accumulate, other order: K*2^-24*Σ|x w| + 1 bf16 ulp
  for (bool tr : {false, true}) {
    const int64_t S = 3, H = 4, K = 64, N = 96, xs = H * 80, xh = 80, rs = (tr ? K : N) + 5;
    const int64_t whs = rs * (tr ? N : K);
    auto x = rand_bf16(size_t(S * xs)), w = rand_bf16(size_t(H * whs));
    std::vector<bf16> y(size_t(S * H * N));
    HeadMatmul p{x.data(), w.data(), y.data(), S, H, K, N, xs, xh, whs, rs, tr};
    R.head_matmul(p);
    DevBuf<bf16> dx(x), dw(w), dy(y.size());
    dy.poison();
    head_matmul({dx.p, dw.p, dy.p, S, H, K, N, xs, xh, whs, rs, tr}, nullptr);
    auto yo = dy.down();
    for (size_t i = 0; i < y.size(); ++i)
      ASSERT_NEAR(f(yo[i]), f(y[i]), std::fabs(f(y[i])) * std::ldexp(1.0, -7) + 1e-4) << i;
  }
}

}  // namespace
}  // namespace dsa::ops::cuda::test
