// fp8_gemm (spec §3.2) on FP8 tensor cores (mma.sync m16n8k32 e4m3): per 128-wide K block a fresh
// fp32 MMA dot, then acc += dot * (a_s * w_s) in fp32 without FMA, exactly the reference's order.
#include "ops/cuda/common.cuh"

namespace dsa::ops::cuda {
namespace {
using namespace detail;

constexpr int BM = 64, BN = 64, LDS = 128 + 16;

__device__ __forceinline__ void load_tile(uint8_t* dst, const uint8_t* src, int64_t rows_valid,
                                          int64_t K, int64_t k0, bool vec) {
  for (int i = threadIdx.x; i < 64 * 8; i += blockDim.x) {
    const int r = i >> 3, c = (i & 7) * 16;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (r < rows_valid) {
      const uint8_t* s = src + int64_t(r) * K + k0 + c;
      if (vec && k0 + c + 16 <= K) {
        v = *reinterpret_cast<const uint4*>(s);
      } else {
        uint8_t b[16];
#pragma unroll
        for (int j = 0; j < 16; ++j) b[j] = k0 + c + j < K ? s[j] : 0;
        memcpy(&v, b, 16);
      }
    }
    *reinterpret_cast<uint4*>(dst + r * LDS + c) = v;
  }
}

__device__ __forceinline__ void frag_words(const uint8_t* row, int tq, uint32_t (&w)[8]) {
  const uint4 x0 = *reinterpret_cast<const uint4*>(row + tq * 32);
  const uint4 x1 = *reinterpret_cast<const uint4*>(row + tq * 32 + 16);
  w[0] = x0.x; w[1] = x0.y; w[2] = x0.z; w[3] = x0.w;
  w[4] = x1.x; w[5] = x1.y; w[6] = x1.z; w[7] = x1.w;
}

__global__ void __launch_bounds__(128) fp8_gemm_kernel(Fp8Gemm p, bool vec) {
  __shared__ __align__(16) uint8_t as[BM * LDS], ws[BN * LDS];
  const int64_t m0 = int64_t(blockIdx.y) * BM, n0 = int64_t(blockIdx.x) * BN;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;
  const int wm = warp >> 1, wn = warp & 1;
  const int64_t nb = cdiv(p.K, kBlock);
  float acc[2][4][4] = {};
  for (int64_t kb = 0; kb < nb; ++kb) {
    __syncthreads();
    load_tile(as, p.a + m0 * p.K, imin(BM, p.M - m0), p.K, kb * kBlock, vec);
    load_tile(ws, p.w + n0 * p.K, imin(BN, p.N - n0), p.K, kb * kBlock, vec);
    __syncthreads();
    uint32_t a[2][2][8], b[4][8];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      frag_words(as + (wm * 32 + mt * 16 + g) * LDS, tq, a[mt][0]);
      frag_words(as + (wm * 32 + mt * 16 + g + 8) * LDS, tq, a[mt][1]);
    }
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) frag_words(ws + (wn * 32 + nt * 8 + g) * LDS, tq, b[nt]);
    const float wsc = p.w_s[(n0 / kBlock) * nb + kb];
    float asc[2][2];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int64_t m = m0 + wm * 32 + mt * 16 + g + hh * 8;
        asc[mt][hh] = m < p.M ? p.a_s[m * nb + kb] : 0.0f;
      }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          const uint32_t af[4] = {a[mt][0][2 * kk], a[mt][1][2 * kk], a[mt][0][2 * kk + 1],
                                  a[mt][1][2 * kk + 1]};
          mma_fp8(d, af, b[nt][2 * kk], b[nt][2 * kk + 1]);
        }
#pragma unroll
        for (int r = 0; r < 4; ++r)
          acc[mt][nt][r] = __fadd_rn(acc[mt][nt][r], __fmul_rn(d[r], __fmul_rn(asc[mt][r >> 1], wsc)));
      }
  }
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int64_t m = m0 + wm * 32 + mt * 16 + g + (r >> 1) * 8;
        const int64_t n = n0 + wn * 32 + nt * 8 + 2 * tq + (r & 1);
        if (m < p.M && n < p.N) p.y[m * p.ldy + n].bits = f2bf(acc[mt][nt][r]);
      }
}

}  // namespace

void fp8_gemm(const Fp8Gemm& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.M > 0 && p.N > 0 && p.K > 0 && p.ldy >= p.N, "fp8_gemm: bad dims");
  DSA_CUDA_REQUIRE(p.a && p.a_s && p.w && p.w_s && p.y, "fp8_gemm: null pointer");
  DSA_CUDA_REQUIRE(ceil_div(p.M, BM) <= 65535, "fp8_gemm: M too large");
  const bool vec = p.K % 16 == 0 && (reinterpret_cast<uintptr_t>(p.a) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(p.w) & 15) == 0;
  const dim3 grid(unsigned(ceil_div(p.N, BN)), unsigned(ceil_div(p.M, BM)));
  fp8_gemm_kernel<<<grid, 128, 0, stream>>>(p, vec);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dsa::ops::cuda
