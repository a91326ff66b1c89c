// fp8_gemm (spec §3.2) on FP8 tensor cores: per 128-wide K block a fresh fp32 MMA dot, then
// acc += dot * (a_s * w_s) in fp32 without FMA, exactly the reference's order over K blocks.
// Kernels: <= 16 token rows (decode) fp8_gemv_kernel, memory-bound; more rows a warpgroup-MMA
// (wgmma) kernel with weights as the 64-row A operand and tokens as B, a cp.async ring of swizzled
// tiles and a coalesced bf16 epilogue through shared memory, in two variants: exact (default; f16
// wgmma on converted e4m3, exact products, fp32 accumulation) and FP8 (opt-in, fp8_wgmma()).
// Fallback (K % 16 != 0, unaligned pointers, or fp8_mma_sync() for tests): the tiled mma.sync
// m16n8k32 e4m3 kernel, which the decode kernel matches bit for bit.
#include <algorithm>
#include <cstdlib>

#include "ops/cuda/common.cuh"
#include "ops/cuda/wgmma.cuh"

namespace dsa::ops::cuda {
namespace {
using namespace detail;

constexpr int BM = 64, BN = 64, LDS = 128 + 16;

// One launch's work: a plain GEMM (offsets == nullptr: output rows [0, M), weights w / w_s) or a
// grouped one (group g owns output rows [offsets[g], offsets[g+1]) and weights wp[g] / wsp[g]).
// Output row r reads activation row rows[r] (rows == nullptr: row r).
struct WgJob {
  const fp8* a;
  const float* a_s;
  const int32_t* rows;
  const int32_t* offsets;
  const fp8* const* wp;
  const float* const* wsp;
  const fp8* w;
  const float* w_s;
  bf16* y;
  int64_t G, M, N, K, ldy;
};

// Grouped launch: blockIdx.y enumerates the (group, token tile) pairs in group order. Finds this
// CTA's group g and first output row; false when blockIdx.y is past the last tile.
template <int TN>
__device__ bool find_group_tile(const WgJob& j, int* s_warp, int64_t& g_out, int64_t& r0) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
  const int64_t per = cdiv(j.G, blockDim.x);  // consecutive groups per thread
  const int64_t g0 = imin(j.G, tid * per), g1 = imin(j.G, g0 + per);
  int64_t cnt = 0;
  for (int64_t g = g0; g < g1; ++g) cnt += cdiv(j.offsets[g + 1] - j.offsets[g], TN);
  const int64_t incl = warp_incl_scan(cnt, lane);  // inclusive scan of tile counts over a warp
  if (lane == 31) s_warp[warp] = int(incl);
  __syncthreads();
  int64_t before = 0;
  for (int w = 0; w < warp; ++w) before += s_warp[w];
  int64_t total = 0;
  for (int w = 0; w < nw; ++w) total += s_warp[w];
  __syncthreads();
  const int64_t y = blockIdx.y;
  if (y >= total) return false;
  int64_t t = before + incl - cnt;  // tiles before this thread's groups
  if (y >= t && y < t + cnt) {
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t c = cdiv(j.offsets[g + 1] - j.offsets[g], TN);
      if (y < t + c) {
        s_warp[32] = int(g);
        s_warp[33] = int(j.offsets[g] + (y - t) * TN);
        break;
      }
      t += c;
    }
  }
  __syncthreads();
  g_out = s_warp[32];
  r0 = s_warp[33];
  return true;
}


// 64 rows x 128 bytes [k0, k0 + 128) of a tile into dst (row stride LDS): row r from row(r)
// (nullptr: zeros), bytes past K zero.
template <class Row>
__device__ __forceinline__ void load_rows(uint8_t* dst, Row row, int64_t K, int64_t k0, bool vec) {
  for (int i = threadIdx.x; i < 64 * 8; i += blockDim.x) {
    const int r = i >> 3, c = (i & 7) * 16;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (const uint8_t* src = row(r)) {
      const uint8_t* s = src + k0 + c;
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

// This CTA's token tile: rows [r0, rend) of the output, the weights it multiplies, and the
// activation row of each of its T token slots in s_src (-1 = none). False: no tile (grouped
// launches have spare CTAs). All threads call it (barriers inside).
template <int T>
__device__ bool job_tile(const WgJob& j, int* s_misc, int32_t* s_src, int64_t& r0, int64_t& rend,
                         const fp8*& W, const float*& Ws) {
  r0 = int64_t(blockIdx.y) * T;
  rend = j.M;
  W = j.w;
  Ws = j.w_s;
  if (j.offsets) {
    int64_t grp = 0;
    if (!find_group_tile<T>(j, s_misc, grp, r0)) return false;
    rend = j.offsets[grp + 1];
    W = j.wp[grp];
    Ws = j.wsp[grp];
  }
  if (threadIdx.x < T) {
    const int64_t r = r0 + threadIdx.x;
    s_src[threadIdx.x] = r < rend ? (j.rows ? j.rows[r] : int32_t(r)) : -1;
  }
  __syncthreads();
  return true;
}

// Exact path (the default): mma.sync m16n8k32 e4m3 keeps each 32-wide k-step exact in fp32 on
// Hopper (layer-0 GEMM outputs of the golden test bit-identical to the CPU reference), unlike
// the FP8 wgmma below. CTA = 64 tokens x 64 weight rows; grouped jobs as in the wgmma kernel.
__global__ void __launch_bounds__(128) fp8_gemm_kernel(WgJob j, bool vec) {
  __shared__ __align__(16) uint8_t as[BM * LDS], ws[BN * LDS];
  __shared__ int s_misc[34];
  __shared__ int32_t s_src[BM];
  const int64_t n0 = int64_t(blockIdx.x) * BN;
  int64_t m0 = 0, mend = 0;
  const fp8* W = nullptr;
  const float* Ws = nullptr;
  if (!job_tile<BM>(j, s_misc, s_src, m0, mend, W, Ws)) return;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;
  const int wm = warp >> 1, wn = warp & 1;
  const int64_t K = j.K, nb = cdiv(K, kBlock);
  float acc[2][4][4] = {};
  const uint8_t* const a8 = reinterpret_cast<const uint8_t*>(j.a);
  const uint8_t* const w8 = reinterpret_cast<const uint8_t*>(W);
  auto token_row = [&](int r) { return s_src[r] >= 0 ? a8 + int64_t(s_src[r]) * K : nullptr; };
  auto weight_row = [&](int r) { return n0 + r < j.N ? w8 + (n0 + r) * K : nullptr; };
  for (int64_t kb = 0; kb < nb; ++kb) {
    __syncthreads();
    load_rows(as, token_row, K, kb * kBlock, vec);
    load_rows(ws, weight_row, K, kb * kBlock, vec);
    __syncthreads();
    uint32_t a[2][2][8], b[4][8];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      frag_words(as + (wm * 32 + mt * 16 + g) * LDS, tq, a[mt][0]);
      frag_words(as + (wm * 32 + mt * 16 + g + 8) * LDS, tq, a[mt][1]);
    }
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) frag_words(ws + (wn * 32 + nt * 8 + g) * LDS, tq, b[nt]);
    const float wsc = Ws[(n0 / kBlock) * nb + kb];
    float asc[2][2];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int32_t m = s_src[wm * 32 + mt * 16 + g + hh * 8];
        asc[mt][hh] = m >= 0 ? j.a_s[int64_t(m) * nb + kb] : 0.0f;
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
        if (m < mend && n < j.N) j.y[m * j.ldy + n].bits = f2bf(acc[mt][nt][r]);
      }
}

// ---- Few token rows (decode): the weights must stream at memory speed. CTA = 8 warps; warp w
// takes weight rows [8 (w / KS), +8) of the CTA's 64 / KS and K blocks w % KS + KS i, kGvU of them
// in flight in registers; per iteration the CTA stages the token rows of its KS kGvU blocks in
// shared memory. Per block, fp8_gemm_kernel's instruction sequence (tokens as the 16-row A operand,
// same fragments, same 4 chained mma.sync) gives the same term d * (a_s * w_s); the terms go to
// shared memory and one thread per output adds them in increasing block order, as the tiled kernel
// does: bit-identical to it. KS (K split) grows with the number of K blocks.
constexpr int kGvTok = 16, kGvU = 8;
constexpr size_t kGvSmemMax = 220 * 1024;
// tok: token rows a CTA can hold (<= 16, the smallest that covers the job's tiles).
struct GvCfg {
  int ks, tok;
  size_t terms, smem;
};
GvCfg gv_cfg(int64_t K, int64_t tok) {
  const int64_t nb = cdiv(K, kBlock);
  const int ks = nb >= 64 ? 8 : nb >= 32 ? 4 : nb >= 16 ? 2 : 1;
  const size_t terms = size_t(nb * tok) * 8 * (8 / ks) * 4;
  return {ks, int(tok), terms, terms + size_t(tok) * kBlock * ks * kGvU};
}

// 32 bytes [k, k + 32) of row src (nullptr: zeros), zero past K.
__device__ __forceinline__ void gv_load32(uint32_t (&w)[8], const uint8_t* src, int64_t K, int64_t k, bool vec) {
  if (src && vec && k + 32 <= K) {
    const uint4 x0 = __ldg(reinterpret_cast<const uint4*>(src + k));
    const uint4 x1 = __ldg(reinterpret_cast<const uint4*>(src + k + 16));
    w[0] = x0.x; w[1] = x0.y; w[2] = x0.z; w[3] = x0.w;
    w[4] = x1.x; w[5] = x1.y; w[6] = x1.z; w[7] = x1.w;
    return;
  }
  uint8_t b[32];
#pragma unroll
  for (int i = 0; i < 32; ++i) b[i] = src && k + i < K ? src[k + i] : 0;
  memcpy(w, b, 32);
}

template <int KS>
__global__ void __launch_bounds__(256) fp8_gemv_kernel(WgJob j, bool vec, size_t terms_bytes, int tok) {
  constexpr int RG = 8 / KS, NR = 8 * RG, SPAN = KS * kGvU;  // rows per CTA, K blocks per iteration
  extern __shared__ __align__(16) uint8_t gv_smem[];
  float* part = reinterpret_cast<float*>(gv_smem);  // [nb][tok][NR] block terms
  uint8_t* slab = gv_smem + terms_bytes;            // [tok][SPAN][128] token rows
  __shared__ int s_misc[34];
  __shared__ int32_t s_src[kGvTok];
  const int64_t n0 = int64_t(blockIdx.x) * NR;
  int64_t m0 = 0, mend = 0;
  const fp8* W = nullptr;
  const float* Ws = nullptr;
  if (!job_tile<kGvTok>(j, s_misc, s_src, m0, mend, W, Ws)) return;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, tq = lane & 3;
  const int rg = warp / KS, ks = warp % KS;
  const int64_t K = j.K, nb = cdiv(K, kBlock), rows = imin(tok, mend - m0), nw = n0 + rg * 8 + g;
  const uint8_t* wrow = nw < j.N ? reinterpret_cast<const uint8_t*>(W) + nw * K : nullptr;
  const float* wsr = Ws + (n0 / kBlock) * nb;
  const int32_t ra = s_src[g], rb = s_src[g + 8];
  for (int64_t it0 = 0; it0 < nb; it0 += SPAN) {
    uint32_t b[kGvU][8];
#pragma unroll
    for (int u = 0; u < kGvU; ++u) {
      const int64_t kb = it0 + ks + u * KS;
      if (kb < nb) gv_load32(b[u], wrow, K, kb * kBlock + tq * 32, vec);
    }
    // Token rows of this iteration's blocks, 16 bytes per step (rows past the tile: not read).
    for (int64_t i = tid; i < rows * SPAN * 8; i += blockDim.x) {
      const int r = int(i / (SPAN * 8)), kbl = int(i % (SPAN * 8)) / 8, c = int(i % 8);
      const int64_t k = (it0 + kbl) * kBlock + c * 16;
      const int32_t src = s_src[r];
      uint4 v = make_uint4(0, 0, 0, 0);
      if (src >= 0 && k < K) {
        const uint8_t* sp = reinterpret_cast<const uint8_t*>(j.a) + int64_t(src) * K + k;
        if (vec && k + 16 <= K) {
          v = __ldg(reinterpret_cast<const uint4*>(sp));
        } else {
          uint8_t t[16];
#pragma unroll
          for (int e = 0; e < 16; ++e) t[e] = k + e < K ? sp[e] : 0;
          memcpy(&v, t, 16);
        }
      }
      *reinterpret_cast<uint4*>(slab + (r * SPAN + kbl) * kBlock + c * 16) = v;
    }
    __syncthreads();
#pragma unroll
    for (int u = 0; u < kGvU; ++u) {
      const int kbl = ks + u * KS;
      const int64_t kb = it0 + kbl;
      if (kb >= nb) break;
      uint32_t a0[8] = {}, a1[8] = {};  // token rows past the slab: zeros (their outputs are dropped)
      if (g < rows) frag_words(slab + (g * SPAN + kbl) * kBlock, tq, a0);
      if (g + 8 < rows) frag_words(slab + ((g + 8) * SPAN + kbl) * kBlock, tq, a1);
      float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const uint32_t af[4] = {a0[2 * kk], a1[2 * kk], a0[2 * kk + 1], a1[2 * kk + 1]};
        mma_fp8(d, af, b[u][2 * kk], b[u][2 * kk + 1]);
      }
      const float wsc = wsr[kb];
      const float asc0 = ra >= 0 ? j.a_s[int64_t(ra) * nb + kb] : 0.0f;
      const float asc1 = rb >= 0 ? j.a_s[int64_t(rb) * nb + kb] : 0.0f;
      float* pt = part + kb * (tok * NR) + rg * 8;
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int t = g + (r >> 1) * 8;
        if (t < rows) pt[t * NR + 2 * tq + (r & 1)] = __fmul_rn(d[r], __fmul_rn(r >> 1 ? asc1 : asc0, wsc));
      }
    }
    __syncthreads();
  }
  // In-order sums, 8 terms loaded ahead of their adds.
  for (int i = tid; i < rows * NR; i += blockDim.x) {
    const int64_t m = m0 + i / NR, n = n0 + i % NR;
    if (n >= j.N) continue;
    const float* pi = part + i;
    const int64_t st = tok * NR;
    float acc = 0.0f;
    int64_t kb = 0;
    for (; kb + 8 <= nb; kb += 8) {
      float v[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = pi[(kb + e) * st];
#pragma unroll
      for (int e = 0; e < 8; ++e) acc = __fadd_rn(acc, v[e]);
    }
    for (; kb < nb; ++kb) acc = __fadd_rn(acc, pi[kb * st]);
    j.y[m * j.ldy + n].bits = f2bf(acc);
  }
}

template <int KS>
void launch_gemv_ks(const WgJob& j, int64_t tiles, bool vec, const GvCfg& c, cudaStream_t stream) {
  static bool configured = false;
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(fp8_gemv_kernel<KS>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kGvSmemMax)));
    configured = true;
  }
  const dim3 grid(unsigned(ceil_div(j.N, 64 / KS)), unsigned(tiles));
  fp8_gemv_kernel<KS><<<grid, 256, c.smem, stream>>>(j, vec, c.terms, c.tok);
  CUDA_CHECK_LAUNCH();
}
void launch_gemv(const WgJob& j, int64_t tiles, bool vec, const GvCfg& c, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(tiles <= 65535, "fp8_gemm: too many token tiles");
  if (c.ks == 8) launch_gemv_ks<8>(j, tiles, vec, c, stream);
  else if (c.ks == 4) launch_gemv_ks<4>(j, tiles, vec, c, stream);
  else if (c.ks == 2) launch_gemv_ks<2>(j, tiles, vec, c, stream);
  else launch_gemv_ks<1>(j, tiles, vec, c, stream);
}

// ---- wgmma kernels. CTA = NWG warpgroups; weight rows [n0, n0 + 64 NWG) x tokens [m0, m0 + TN).
// kExact = false: FP8 wgmma on both tiles in shared memory (opt-in, fp8_wgmma()).
// kExact = true (the default for K % 16 == 0): f16 wgmma, whose fp32 accumulation keeps every
// product exact. Per K block, each warp converts its 16 weight rows' e4m3 bytes to f16 in registers
// (the register A operand) and the CTA converts the token tile into an f16 B tile; D is permuted as
// in the exact indexer (lane (g, tq) holds bytes [32 tq, 32 tq + 32) of its rows, k16-step j
// takes word j: low half at MMA k 2tq.., high half at 8 + 2tq..; the B tile stores dim
// 32 tq + 4 j + 2 hh + e at logical k 16 j + 8 hh + 2 tq + e). Promotion per block as below.
constexpr int kGStages = 4;
template <int NWG, int TN, bool kExact>
struct GCfg {
  static constexpr int kRows = 64 * NWG, kThreads = 128 * NWG;
  static constexpr size_t kA = size_t(kRows) * 128, kB = size_t(TN) * 128;
  static constexpr size_t kStage = kA + kB + 1024;  // + TN activation scales, keeps 1024 alignment
  static constexpr size_t kF16B = kExact ? 2 * size_t(TN) * 256 : 0;  // 2 f16 token tiles (2 column blocks each)
  static constexpr size_t kEpi = size_t(TN) * (kRows + 8) * 2;  // bf16 [TN][kRows + 8]
  static constexpr size_t kSmem = 1024 + std::max(kGStages * kStage + kF16B, kEpi);
  static_assert(TN * 4 <= 1024 && kA % 1024 == 0 && kB % 1024 == 0 && kF16B % 1024 == 0);
};

template <int NWG, int TN, bool kExact>
__global__ void __launch_bounds__(128 * NWG) fp8_gemm_wgmma_kernel(WgJob j) {
  using C = GCfg<NWG, TN, kExact>;
  extern __shared__ uint8_t g_raw[];
  __shared__ int s_misc[34];
  __shared__ int32_t s_src[TN];  // activation row of each token slot, -1 = none
  // 1024-aligned base derived by pointer arithmetic: the compiler keeps the shared address space.
  uint8_t* sm = g_raw + ((1024u - (smem_addr(g_raw) & 1023u)) & 1023u);
  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
  const int g = lane >> 2, tq = lane & 3;
  const int64_t n0 = int64_t(blockIdx.x) * C::kRows;
  const int64_t K = j.K, nb = cdiv(K, kBlock);
  int64_t r0 = 0, rend = 0;
  const fp8* W = nullptr;
  const float* Ws = nullptr;
  if (!job_tile<TN>(j, s_misc, s_src, r0, rend, W, Ws)) return;
  auto stage = [&](int st) { return sm + st * C::kStage; };
  // K block kb into stage st: weight rows, token rows (zeros past N / the tile / K), token scales.
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
        const bool ok = n < j.N && k < K;
        cp_async16(smem_addr(a) + swz128(r, ch), ok ? W + n * K + k : W, ok ? 16u : 0u);
      } else {
        const int rr = r - C::kRows;
        const int64_t m = s_src[rr];
        const bool ok = m >= 0 && k < K;
        cp_async16(smem_addr(b) + swz128(rr, ch), ok ? j.a + m * K + k : j.a, ok ? 16u : 0u);
      }
    }
    if (tid < TN) {
      const int64_t m = s_src[tid];
      cp_async4(smem_addr(as + tid), m >= 0 ? j.a_s + m * nb + kb : j.a_s, m >= 0 ? 4u : 0u);
    }
  };
#pragma unroll
  for (int i = 0; i < kGStages - 1; ++i) {
    if (i < nb) issue(i, i);
    cp_async_commit();
  }
  float acc[TN / 2], d[TN / 2];  // d: fresh per block (the first k-step overwrites it)
#pragma unroll
  for (int i = 0; i < TN / 2; ++i) acc[i] = d[i] = 0.0f;
  const float* wsrow = Ws + ((n0 + 64 * wg) / kBlock) * nb;
  // acc += d * (a_s * w_s) per K block, the reference's fp32 ops (no FMA).
  auto promote = [&](int64_t kb, const uint8_t* a) {
    const float* as = reinterpret_cast<const float*>(a + C::kA + C::kB);
    const float wsc = wsrow[kb];
#pragma unroll
    for (int q = 0; q < TN / 8; ++q) {
      const float s0 = __fmul_rn(as[8 * q + 2 * tq], wsc), s1 = __fmul_rn(as[8 * q + 2 * tq + 1], wsc);
      acc[4 * q] = __fadd_rn(acc[4 * q], __fmul_rn(d[4 * q], s0));
      acc[4 * q + 1] = __fadd_rn(acc[4 * q + 1], __fmul_rn(d[4 * q + 1], s1));
      acc[4 * q + 2] = __fadd_rn(acc[4 * q + 2], __fmul_rn(d[4 * q + 2], s0));
      acc[4 * q + 3] = __fadd_rn(acc[4 * q + 3], __fmul_rn(d[4 * q + 3], s1));
    }
  };
  if constexpr (kExact) {
    // Token tile of stage st -> f16 B tile fb (f16_b_chunk); dim d of token h is byte d % 16 of
    // chunk d / 16 of the swizzled FP8 row.
    auto convert_tokens = [&](int st, uint8_t* fb) {
      const uint8_t* tb = stage(st) + C::kA;
      for (int c = tid; c < TN * 16; c += C::kThreads) {
        const int h = c >> 4, jj = (c >> 1) & 7, hh = c & 1;
        auto pair = [&](int d) {
          return uint32_t(*reinterpret_cast<const uint16_t*>(tb + swz128(h, d >> 4) + (d & 15)));
        };
        *reinterpret_cast<uint4*>(fb + f16_b_offset(h, jj, hh, TN * 128)) = f16_b_chunk(pair, jj, hh);
      }
    };
    uint8_t* const fbuf = sm + kGStages * C::kStage;  // 2 f16 token tiles of TN * 256 bytes
    // Pipeline: block kb's f16 token tile (fbuf[kb & 1]) is converted during block kb - 1's MMAs;
    // block kb's weights are converted to registers right before its MMAs. Groups committed before
    // the wait of iteration kb: 3 + kb + 1; blocks 0..kb + 1 must be in: wait_group 2. (H200: the
    // same 209-222 TFLOPS at prefill shapes as converting each block's tokens after its wait; the
    // FP8 variant, without conversions, reaches 375-395.)
    cp_async_wait<kGStages - 2>();
    __syncthreads();
    convert_tokens(0, fbuf);
    fence_async_smem();
    __syncthreads();
    for (int64_t kb = 0; kb < nb; ++kb) {
      const uint8_t* a = stage(int(kb % kGStages));
      // This warp's weight rows 16 warp + g (+ 8) of the warpgroup's 64.
      uint32_t af[8][4];
      fp8_rows_f16_frags(a + (wg * 64 + warp * 16) * 128, g, tq, af);
      const uint64_t db = wg_desc(smem_addr(fbuf + (kb & 1) * (TN * 256)));
      wg_fence();
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) wgmma_f16_rs<TN>(d, af[jj], f16_b_desc(db, jj, TN * 128), jj);
      wg_commit();
      // The stage of block kb - 1 is free (the MMAs read registers and fbuf only): refill it.
      if (kb + kGStages - 1 < nb) issue(kb + kGStages - 1, int((kb + kGStages - 1) % kGStages));
      cp_async_commit();
      if (kb + 1 < nb) {  // block kb + 1's tokens, while the tensor cores work on block kb
        cp_async_wait<kGStages - 2>();
        __syncthreads();
        convert_tokens(int((kb + 1) % kGStages), fbuf + ((kb + 1) & 1) * (TN * 256));
      }
      wg_wait0();
      promote(kb, a);
      fence_async_smem();
      __syncthreads();  // fbuf[(kb + 1) & 1] complete; every thread is done with block kb
    }
  } else {
    // Pipeline: K block i lives in stage i % kGStages; per block: wait for it, barrier (which also
    // frees the stage of block kb - 1), refill that stage, MMA, then promote in fp32.
    // (Issuing block kb + 1's MMA before promoting block kb, with two accumulator sets, measured
    // slower on the H200: 245 registers and 350 vs 377 TFLOPS.)
    for (int64_t kb = 0; kb < nb; ++kb) {
      const int st = int(kb % kGStages);
      cp_async_wait<kGStages - 2>();
      fence_async_smem();
      __syncthreads();
      const uint8_t* a = stage(st);
      const uint64_t da = wg_desc(smem_addr(a + wg * 64 * 128));
      const uint64_t db = wg_desc(smem_addr(a + C::kA));
      // FP8 wgmma: the tensor cores accumulate below fp32 precision (DeepSeek-V3 report: ~14
      // bits); per-block promotion as DeepGEMM / DeepSeek's kernels do. Opt-in (fp8_wgmma()).
      wg_fence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) wgmma_fp8<TN>(d, da + 2 * kk, db + 2 * kk, kk);
      wg_commit();
      // Refill the stage of block kb - 1 while the tensor cores work on block kb.
      if (kb + kGStages - 1 < nb) issue(kb + kGStages - 1, int((kb + kGStages - 1) % kGStages));
      cp_async_commit();
      wg_wait0();
      promote(kb, a);
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // stages free: bf16 tile [token][row] for coalesced row stores
  uint16_t* ep = reinterpret_cast<uint16_t*>(sm);
  constexpr int LD = C::kRows + 8;
  const int rw = wg * 64 + warp * 16 + g;
#pragma unroll
  for (int i = 0; i < TN / 2; ++i) {
    const int r = rw + 8 * ((i >> 1) & 1), col = 8 * (i >> 2) + 2 * tq + (i & 1);
    ep[col * LD + r] = f2bf(acc[i]);
  }
  __syncthreads();
  const bool vec = (j.ldy % 8) == 0 && (reinterpret_cast<uintptr_t>(j.y) & 15) == 0 && n0 + C::kRows <= j.N;
  for (int c = tid; c < TN * (C::kRows / 8); c += C::kThreads) {
    const int col = c / (C::kRows / 8), r8 = (c % (C::kRows / 8)) * 8;
    const int64_t m = r0 + col;
    if (m >= rend) continue;
    bf16* y = j.y + m * j.ldy + n0 + r8;
    if (vec) {
      *reinterpret_cast<uint4*>(y) = *reinterpret_cast<const uint4*>(ep + col * LD + r8);
    } else {
      for (int e = 0; e < 8 && n0 + r8 + e < j.N; ++e) y[e].bits = ep[col * LD + r8 + e];
    }
  }
}

// tiles: grid.y (token tiles; for a grouped job an upper bound, extra CTAs exit at once).
template <int NWG, int TN, bool kExact>
void launch_wgmma(const WgJob& j, int64_t tiles, cudaStream_t stream) {
  using C = GCfg<NWG, TN, kExact>;
  static bool configured = false;
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(fp8_gemm_wgmma_kernel<NWG, TN, kExact>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, int(C::kSmem)));
    configured = true;
  }
  DSA_CUDA_REQUIRE(tiles <= 65535, "fp8_gemm: too many token tiles");
  const dim3 grid(unsigned(ceil_div(j.N, C::kRows)), unsigned(tiles));
  fp8_gemm_wgmma_kernel<NWG, TN, kExact><<<grid, C::kThreads, C::kSmem, stream>>>(j);
  CUDA_CHECK_LAUNCH();
}

// Token tile tn in {16, 32, 64, 128}; two warpgroups (128 weight rows) when many rows remain.
template <bool kExact>
void launch_tile(const WgJob& j, int64_t tn, bool two, int64_t tiles, cudaStream_t stream) {
  if (tn == 128 && two) launch_wgmma<2, 128, kExact>(j, tiles, stream);
  else if (tn == 128) launch_wgmma<1, 128, kExact>(j, tiles, stream);
  else if (tn == 64) launch_wgmma<1, 64, kExact>(j, tiles, stream);
  else if (tn == 32) launch_wgmma<1, 32, kExact>(j, tiles, stream);
  else launch_wgmma<1, 16, kExact>(j, tiles, stream);
}
void launch_tile(const WgJob& j, int64_t tn, bool two, int64_t tiles, cudaStream_t stream) {
  if (fp8_wgmma()) launch_tile<false>(j, tn, two, tiles, stream);
  else launch_tile<true>(j, tn, two, tiles, stream);
}

int64_t tile_for(int64_t rows) { return rows <= 16 ? 16 : rows <= 32 ? 32 : rows <= 64 ? 64 : 128; }
}  // namespace

void fp8_gemm(const Fp8Gemm& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.M > 0 && p.N > 0 && p.K > 0 && p.ldy >= p.N, "fp8_gemm: bad dims");
  DSA_CUDA_REQUIRE(p.a && p.a_s && p.w && p.w_s && p.y, "fp8_gemm: null pointer");
  DSA_CUDA_REQUIRE(ceil_div(p.M, 16) <= 65535, "fp8_gemm: M too large");
  const bool vec = p.K % 16 == 0 && (reinterpret_cast<uintptr_t>(p.a) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(p.w) & 15) == 0;
  const WgJob j{p.a, p.a_s, nullptr, nullptr, nullptr, nullptr, p.w, p.w_s, p.y, 1, p.M, p.N, p.K, p.ldy};
  if (const GvCfg c = gv_cfg(p.K, p.M); p.M <= kGvTok && c.smem <= kGvSmemMax) {  // decode: memory-bound
    launch_gemv(j, 1, vec, c, stream);
    return;
  }
  if (vec && !fp8_mma_sync()) {
    // Token tile: the smallest of 16/32/64/128 covering M, halved while fewer than ~2 CTAs per
    // SM would run (few weight rows, e.g. an expert: more token tiles re-read the weights from
    // L2 instead of leaving SMs idle); two warpgroups (128 weight rows) for M > 128.
    // (One-warpgroup CTAs for large M too, 2 per SM, measured slower for the FP8 variant: 278-286
    // vs 338-360 TFLOPS.)
    int64_t tn = tile_for(p.M);
    while (tn > 16 && ceil_div(p.N, 64) * ceil_div(p.M, tn) < 264) tn /= 2;
    launch_tile(j, tn, p.M > 128, ceil_div(p.M, tn), stream);
    return;
  }
  const dim3 grid(unsigned(ceil_div(p.N, BN)), unsigned(ceil_div(p.M, BM)));
  fp8_gemm_kernel<<<grid, 128, 0, stream>>>(j, vec);
  CUDA_CHECK_LAUNCH();
}

void grouped_fp8_gemm(const GroupedFp8Gemm& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.G > 0 && p.R >= 0 && p.N > 0 && p.K > 0 && p.ldy >= p.N, "grouped_fp8_gemm: bad dims");
  DSA_CUDA_REQUIRE(p.a && p.a_s && p.offsets && p.w && p.w_s && p.y, "grouped_fp8_gemm: null pointer");
  DSA_CUDA_REQUIRE(p.G <= 32 * 1024, "grouped_fp8_gemm: too many groups");
  if (p.R == 0) return;
  const WgJob j{p.a, p.a_s, p.rows, p.offsets, p.w, p.w_s, nullptr, nullptr, p.y, p.G, p.R, p.N, p.K, p.ldy};
  // At most min(G, R) groups are non-empty and each adds at most one partial tile, so
  // ceil(R / tile) + min(G, R) bounds the tile count (extra CTAs exit at once).
  const int64_t busy = std::min(p.G, p.R);
  const bool vec = p.K % 16 == 0 && (reinterpret_cast<uintptr_t>(p.a) & 15) == 0;
  if (const GvCfg c = gv_cfg(p.K, std::min<int64_t>(kGvTok, p.R));
      ceil_div(p.R, busy) <= kGvTok && c.smem <= kGvSmemMax) {  // few rows per group (decode)
    launch_gemv(j, ceil_div(p.R, int64_t(kGvTok)) + busy, vec, c, stream);
    return;
  }
  if (vec && !fp8_mma_sync()) {
    const int64_t mean = ceil_div(p.R, busy), tn = tile_for(mean);  // tile from the mean group size
    launch_tile(j, tn, mean > 128, ceil_div(p.R, tn) + busy, stream);
    return;
  }
  const int64_t tiles = ceil_div(p.R, BM) + busy;
  DSA_CUDA_REQUIRE(tiles <= 65535, "grouped_fp8_gemm: too many token tiles");
  // Weight rows of every group must be 16-byte aligned for the vector loads: K % 16 == 0 suffices
  // for row starts; group bases are separate allocations (256-byte aligned).
  fp8_gemm_kernel<<<dim3(unsigned(ceil_div(p.N, BN)), unsigned(tiles)), 128, 0, stream>>>(j, vec);
  CUDA_CHECK_LAUNCH();
}

namespace {
bool& wgmma_flag() {
  static bool f = [] {
    const char* e = std::getenv("DSA_FP8_WGMMA");
    return e && e[0] == '1';
  }();
  return f;
}
}  // namespace

bool fp8_wgmma() { return wgmma_flag(); }
void set_fp8_wgmma(bool on) { wgmma_flag() = on; }

namespace {
bool& mma_sync_flag() {
  static bool f = false;
  return f;
}
}  // namespace
bool fp8_mma_sync() { return mma_sync_flag() && !fp8_wgmma(); }
void set_fp8_mma_sync(bool on) { mma_sync_flag() = on; }

}  // namespace dsa::ops::cuda

