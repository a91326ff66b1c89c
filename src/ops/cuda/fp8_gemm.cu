// fp8_gemm (spec §3.2) on FP8 tensor cores: per 128-wide K block a fresh fp32 MMA dot, then
// acc += dot * (a_s * w_s) in fp32 without FMA, exactly the reference's order over K blocks.
// Hopper path: warpgroup MMA (wgmma) with weights as the 64-row A operand and tokens as B (so a
// decode GEMM with a few tokens uses n16/n32 instructions), a cp.async ring of swizzled tiles and a
// coalesced bf16 epilogue through shared memory. Fallback (K % 16 != 0, unaligned pointers):
// mma.sync m16n8k32 kernel.
#include <algorithm>

#include "ops/cuda/common.cuh"
#include "ops/cuda/wgmma.cuh"

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

// ---- wgmma kernel. CTA = NWG warpgroups; weight rows [n0, n0 + 64 NWG) x tokens [m0, m0 + TN).
constexpr int kGStages = 4;
template <int NWG, int TN>
struct GCfg {
  static constexpr int kRows = 64 * NWG, kThreads = 128 * NWG;
  static constexpr size_t kA = size_t(kRows) * 128, kB = size_t(TN) * 128;
  static constexpr size_t kStage = kA + kB + 1024;  // + TN activation scales, keeps 1024 alignment
  static constexpr size_t kEpi = size_t(TN) * (kRows + 8) * 2;  // bf16 [TN][kRows + 8]
  static constexpr size_t kSmem = 1024 + std::max(kGStages * kStage, kEpi);
  static_assert(TN * 4 <= 1024 && kA % 1024 == 0 && kB % 1024 == 0);
};

template <int NWG, int TN>
__global__ void __launch_bounds__(128 * NWG) fp8_gemm_wgmma_kernel(Fp8Gemm p) {
  using C = GCfg<NWG, TN>;
  extern __shared__ uint8_t g_raw[];
  uint8_t* sm = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(g_raw) + 1023) & ~uintptr_t(1023));
  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
  const int g = lane >> 2, tq = lane & 3;
  const int64_t n0 = int64_t(blockIdx.x) * C::kRows, m0 = int64_t(blockIdx.y) * TN;
  const int64_t K = p.K, nb = cdiv(K, kBlock);
  auto stage = [&](int st) { return sm + st * C::kStage; };
  // K block kb into stage st: weight rows, token rows (zeros past N / M / K), token scales.
  auto issue = [&](int64_t kb, int st) {
    uint8_t* a = stage(st);
    uint8_t* b = a + C::kA;
    float* as = reinterpret_cast<float*>(b + C::kB);
    const int64_t k0 = kb * kBlock;
    for (int c = tid; c < (C::kRows + TN) * 8; c += C::kThreads) {
      const int r = c >> 3, ch = c & 7;
      const int64_t k = k0 + ch * 16;
      if (r < C::kRows) {
        const int64_t n = n0 + r;
        const bool ok = n < p.N && k < K;
        cp_async16(smem_addr(a) + swz128(r, ch), ok ? p.w + n * K + k : p.w, ok ? 16u : 0u);
      } else {
        const int rr = r - C::kRows;
        const int64_t m = m0 + rr;
        const bool ok = m < p.M && k < K;
        cp_async16(smem_addr(b) + swz128(rr, ch), ok ? p.a + m * K + k : p.a, ok ? 16u : 0u);
      }
    }
    if (tid < TN) {
      const int64_t m = m0 + tid;
      cp_async4(smem_addr(as + tid), m < p.M ? p.a_s + m * nb + kb : p.a_s, m < p.M ? 4u : 0u);
    }
  };
  // Pipeline: K block j lives in stage j % kGStages; per block: wait for it, barrier (which also
  // frees the stage of block kb - 1), refill that stage, MMA, then promote in fp32.
  // (Issuing block kb + 1's MMA before promoting block kb, with two accumulator sets, measured
  // slower on the H200: 245 registers and 350 vs 377 TFLOPS.)
#pragma unroll
  for (int i = 0; i < kGStages - 1; ++i) {
    if (i < nb) issue(i, i);
    cp_async_commit();
  }
  float acc[TN / 2], d[TN / 2];
#pragma unroll
  for (int i = 0; i < TN / 2; ++i) acc[i] = 0.0f;
  const float* wsrow = p.w_s + ((n0 + 64 * wg) / kBlock) * nb;
  for (int64_t kb = 0; kb < nb; ++kb) {
    const int st = int(kb % kGStages);
    cp_async_wait<kGStages - 2>();
    fence_async_smem();
    __syncthreads();
    if (kb + kGStages - 1 < nb) issue(kb + kGStages - 1, int((kb + kGStages - 1) % kGStages));
    cp_async_commit();
    const uint8_t* a = stage(st);
    const uint64_t da = wg_desc(smem_addr(a + wg * 64 * 128));
    const uint64_t db = wg_desc(smem_addr(a + C::kA));
#pragma unroll
    for (int i = 0; i < TN / 2; ++i) d[i] = 0.0f;
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) wgmma_fp8<TN>(d, da + 2 * kk, db + 2 * kk, kk);
    wg_commit();
    wg_wait0();
    const float* as = reinterpret_cast<const float*>(a + C::kA + C::kB);
    const float wsc = wsrow[kb];
#pragma unroll
    for (int j = 0; j < TN / 8; ++j) {
      const float s0 = __fmul_rn(as[8 * j + 2 * tq], wsc), s1 = __fmul_rn(as[8 * j + 2 * tq + 1], wsc);
      acc[4 * j] = __fadd_rn(acc[4 * j], __fmul_rn(d[4 * j], s0));
      acc[4 * j + 1] = __fadd_rn(acc[4 * j + 1], __fmul_rn(d[4 * j + 1], s1));
      acc[4 * j + 2] = __fadd_rn(acc[4 * j + 2], __fmul_rn(d[4 * j + 2], s0));
      acc[4 * j + 3] = __fadd_rn(acc[4 * j + 3], __fmul_rn(d[4 * j + 3], s1));
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // stages free: bf16 tile [token][row] for coalesced row stores
  uint16_t* ep = reinterpret_cast<uint16_t*>(sm);
  constexpr int LD = C::kRows + 8;
  const int r0 = wg * 64 + warp * 16 + g;
#pragma unroll
  for (int i = 0; i < TN / 2; ++i) {
    const int r = r0 + 8 * ((i >> 1) & 1), col = 8 * (i >> 2) + 2 * tq + (i & 1);
    ep[col * LD + r] = f2bf(acc[i]);
  }
  __syncthreads();
  const bool vec = (p.ldy % 8) == 0 && (reinterpret_cast<uintptr_t>(p.y) & 15) == 0 && n0 + C::kRows <= p.N;
  for (int c = tid; c < TN * (C::kRows / 8); c += C::kThreads) {
    const int col = c / (C::kRows / 8), r8 = (c % (C::kRows / 8)) * 8;
    const int64_t m = m0 + col;
    if (m >= p.M) continue;
    bf16* y = p.y + m * p.ldy + n0 + r8;
    if (vec) {
      *reinterpret_cast<uint4*>(y) = *reinterpret_cast<const uint4*>(ep + col * LD + r8);
    } else {
      for (int e = 0; e < 8 && n0 + r8 + e < p.N; ++e) y[e].bits = ep[col * LD + r8 + e];
    }
  }
}

template <int NWG, int TN>
void launch_wgmma(const Fp8Gemm& p, cudaStream_t stream) {
  using C = GCfg<NWG, TN>;
  static bool configured = false;
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(fp8_gemm_wgmma_kernel<NWG, TN>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, int(C::kSmem)));
    configured = true;
  }
  const dim3 grid(unsigned(ceil_div(p.N, C::kRows)), unsigned(ceil_div(p.M, TN)));
  fp8_gemm_wgmma_kernel<NWG, TN><<<grid, C::kThreads, C::kSmem, stream>>>(p);
}

}  // namespace

void fp8_gemm(const Fp8Gemm& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.M > 0 && p.N > 0 && p.K > 0 && p.ldy >= p.N, "fp8_gemm: bad dims");
  DSA_CUDA_REQUIRE(p.a && p.a_s && p.w && p.w_s && p.y, "fp8_gemm: null pointer");
  DSA_CUDA_REQUIRE(ceil_div(p.M, BM) <= 65535, "fp8_gemm: M too large");
  const bool vec = p.K % 16 == 0 && (reinterpret_cast<uintptr_t>(p.a) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(p.w) & 15) == 0;
  if (vec && ceil_div(p.M, 16) <= 65535) {
    // Token tile: the smallest of 16/32/64/128 covering M; two warpgroups (128 weight rows) once
    // the token tile is full, one (64 rows, twice the CTAs) for decode-sized M.
    if (p.M <= 16) launch_wgmma<1, 16>(p, stream);
    else if (p.M <= 32) launch_wgmma<1, 32>(p, stream);
    else if (p.M <= 64) launch_wgmma<1, 64>(p, stream);
    else if (p.M <= 128) launch_wgmma<1, 128>(p, stream);
    else launch_wgmma<2, 128>(p, stream);
    CUDA_CHECK_LAUNCH();
    return;
  }
  const dim3 grid(unsigned(ceil_div(p.N, BN)), unsigned(ceil_div(p.M, BM)));
  fp8_gemm_kernel<<<grid, 128, 0, stream>>>(p, vec);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dsa::ops::cuda
