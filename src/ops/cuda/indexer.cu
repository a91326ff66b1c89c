// Lightning-indexer logits over the paged FP8 key cache (spec §3.8) on FP8 tensor cores: a Hopper
// warpgroup-MMA kernel (wgmma, 64 keys x 64 heads x 128 dims per tile), a scalar kernel for other
// shapes. (An mma.sync m16n8k32 kernel with bulk copies preceded it: 20.2 vs 13.3 us at 128K keys,
// 389 vs 214 us at 32 x 128K on the H200.)
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "ops/cuda/common.cuh"
#include "ops/cuda/wgmma.cuh"

namespace dsa::ops::cuda {
namespace {
using namespace detail;

// ---- Hopper warpgroup MMA (wgmma) path: 64 keys x 64 heads x 128 dims per tile, FP8 operands
// straight from shared memory. Keys are A (M = 64 keys), q is B (N = 64 heads); both K-major rows
// of 128 bytes stored with the 128-byte swizzle (16-byte chunk c of row r at chunk c ^ (r & 7)),
// which is what the wgmma descriptors below describe. cp.async writes the swizzled layout directly,
// so any page size that is a multiple of 4 works (no tensor map, no page-aligned tiles needed).
constexpr int kWgKeys = 64;     // keys per tile (wgmma M)
constexpr int kWgHeads = 64;    // heads per tile (wgmma N); fewer heads are zero-padded
constexpr int kWgStages = 4;    // cp.async ring depth
constexpr int kWgThreads = 128; // one warpgroup
constexpr int kWgMaxTiles = 128; // tiles per block at most (5 blocks still fit an SM)
constexpr size_t kWgTileBytes = size_t(kWgKeys) * 128;           // 8 KB, 1024-aligned
constexpr size_t kWgSmem = 1024 /*align slack*/ + size_t(kWgHeads) * 128 +
                           kWgStages * (kWgTileBytes + kWgKeys * 4);

// Block (one warpgroup) = query row t, tiles [blockIdx.x * tpb, +tpb) of 64 keys; keys at or past
// end[t] are never read (their logits are -inf).
__global__ void __launch_bounds__(kWgThreads) indexer_wgmma_kernel(IndexerLogits p, int tpb, bool fast) {
  extern __shared__ uint8_t wg_raw[];
  __shared__ int32_t s_pg[kWgMaxTiles];  // page id of each tile (pages holding whole tiles)
  uint8_t* sm = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(wg_raw) + 1023) & ~uintptr_t(1023));
  uint8_t* qs = sm;                                      // [64 heads][128 B], swizzled
  uint8_t* ks = sm + kWgHeads * 128;                     // [stages][64 keys][128 B], swizzled
  float* ssc = reinterpret_cast<float*>(ks + kWgStages * kWgTileBytes);  // [stages][64] scales
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, tq = lane & 3;
  const int t = blockIdx.y;
  const int64_t N = p.N, H = p.H, ps = p.k.page_size, pb = page_bytes(p.k);
  const int64_t ntiles = cdiv(N, kWgKeys);
  const int64_t tile0 = int64_t(blockIdx.x) * tpb;
  const int nt = int(imin(tpb, ntiles - tile0));
  asm volatile("griddepcontrol.wait;\n" ::: "memory");  // q, w, cache from earlier kernels (PDL)
  // Let a PDL-launched successor (top-k) be scheduled now; it waits for this grid's completion.
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  const int64_t end = imin(p.end[t], N);
  const int32_t* bt = p.k.block_table + int64_t(t) * p.k.bt_stride;
  // Keys of tile `i` (local index) into stage `st`: 512 16-byte chunks + 64 scales. Thread tid
  // copies chunk tid & 7 of keys (tid >> 3) + 16r; 32-bit page arithmetic (a shift for
  // power-of-two pages): 64-bit divisions here made the kernel issue-bound.
  const uint32_t ps32 = uint32_t(ps);
  const int sh = (ps & (ps - 1)) == 0 ? __ffs(int(ps)) - 1 : -1;
  const int ch = tid & 7;
  const bool whole = ps % kWgKeys == 0;  // every tile inside one page: one table read per tile
  auto issue = [&](int i, int st) {
    const int64_t base = (tile0 + i) * kWgKeys;
    const uint32_t kdst = smem_addr(ks + st * kWgTileBytes);
    const uint32_t sdst = smem_addr(ssc + st * kWgKeys);
    if (whole) {
      const uint32_t b = uint32_t(base);
      const uint32_t pi = sh >= 0 ? b >> sh : b / ps32;
      const uint8_t* pg = p.k.pool + int64_t(s_pg[i]) * pb;
      const uint32_t slot0 = b - pi * ps32;
      const int nvalid = int(imin(kWgKeys, end - base));
      const uint8_t* krow = pg + int64_t(slot0) * 128 + ch * 16;
#pragma unroll
      for (int r = 0; r < kWgKeys / 16; ++r) {
        const int key = (tid >> 3) + 16 * r;
        if (key < nvalid) cp_async16(kdst + swz128(key, ch), krow + key * 128);
      }
      if (tid < kWgKeys / 4 && 4 * tid < nvalid)  // 16 B of scales = 4 keys (page_size % 64 == 0)
        cp_async16(sdst + 16 * tid, pg + ps * 128 + int64_t(slot0 + 4 * tid) * 4);
      return;
    }
#pragma unroll
    for (int r = 0; r < kWgKeys / 16; ++r) {
      const int key = (tid >> 3) + 16 * r;
      if (base + key < end) {
        const uint32_t s = uint32_t(base + key);
        const uint32_t pi = sh >= 0 ? s >> sh : s / ps32;
        const uint32_t slot = s - pi * ps32;
        const uint8_t* pg = p.k.pool + int64_t(bt[pi]) * pb;
        cp_async16(kdst + swz128(key, ch), pg + slot * 128 + ch * 16);
        if (ch == 0) cp_async4(sdst + 4 * key, pg + ps * 128 + slot * 4);
      }
    }
  };
  auto live = [&](int i) { return i < nt && (tile0 + i) * kWgKeys < end; };
  if (whole) {  // all page ids of this block's tiles at once (one memory latency, not one per tile)
    for (int i = tid; i < nt; i += kWgThreads) {
      const uint32_t b = uint32_t((tile0 + i) * kWgKeys);
      s_pg[i] = live(i) ? bt[sh >= 0 ? b >> sh : b / ps32] : 0;
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < kWgStages - 1; ++i) {
    if (live(i)) issue(i, i);
    cp_async_commit();
  }
  // q rows (zero rows for heads >= H) and this thread's head weights: columns 8j + 2tq (+1).
  const uint8_t* qt = p.q + int64_t(t) * H * 128;
  for (int c = tid; c < kWgHeads * 8; c += kWgThreads) {
    const int h = c >> 3, ch = c & 7;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (h < H) v = __ldg(reinterpret_cast<const uint4*>(qt + h * 128 + ch * 16));
    *reinterpret_cast<uint4*>(qs + swz128(h, ch)) = v;
  }
  float wv[16];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int h = 8 * j + 2 * tq;
    wv[2 * j] = h < H ? __ldg(p.w + int64_t(t) * H + h) : 0.0f;
    wv[2 * j + 1] = h + 1 < H ? __ldg(p.w + int64_t(t) * H + h + 1) : 0.0f;
  }
  const uint64_t dq = wg_desc(smem_addr(qs));
  float d[32], e[32];  // fresh per k-step (the MMA overwrites them)
#pragma unroll
  for (int x = 0; x < 32; ++x) d[x] = e[x] = 0.0f;
  float* out = p.out + int64_t(t) * N;
  for (int i = 0; i < nt; ++i) {
    const int st = i % kWgStages;
    cp_async_wait<kWgStages - 2>();
    fence_async_smem();
    __syncthreads();  // tile i in place; every thread is done with tile i - 1's stage
    if (live(i + kWgStages - 1)) issue(i + kWgStages - 1, (i + kWgStages - 1) % kWgStages);
    cp_async_commit();
    const int64_t base = (tile0 + i) * kWgKeys;
    const int64_t r0 = base + warp * 16 + g, r1 = r0 + 8;  // this thread's two keys
    if (!live(i)) {  // past end: no reads, -inf
      if (tq == 0) {
        if (r0 < N) out[r0] = -INFINITY;
        if (r1 < N) out[r1] = -INFINITY;
      }
      continue;
    }
    const uint64_t dk = wg_desc(smem_addr(ks + st * kWgTileBytes));
    // Fresh accumulator per 32-wide k-step, partial dots added in fp32 (the FP8 tensor cores
    // keep ~14 bits when chaining k-steps; see fp8_gemm.cu); `fast` chains them (benchmarks).
    wg_fence();
    if (fast) {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) wgmma_fp8<64>(d, dk + 2 * kk, dq + 2 * kk, kk);
      wg_commit();
      wg_wait0();
    } else {
      wgmma_fp8<64>(d, dk, dq, 0);
      wgmma_fp8<64>(e, dk + 2, dq + 2, 0);
      wg_commit();
      wg_wait0();
#pragma unroll
      for (int kk = 2; kk <= 4; ++kk) {
#pragma unroll
        for (int x = 0; x < 32; ++x) d[x] = __fadd_rn(d[x], e[x]);
        if (kk == 4) break;
        wg_fence();
        wgmma_fp8<64>(e, dk + 2 * kk, dq + 2 * kk, 0);
        wg_commit();
        wg_wait0();
      }
    }
    // d[4j + e]: row r0 (e = 0, 1) or r1 (e = 2, 3), head 8j + 2tq + (e & 1).
    float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      s0 += wv[2 * j] * fmaxf(d[4 * j], 0.0f) + wv[2 * j + 1] * fmaxf(d[4 * j + 1], 0.0f);
      s1 += wv[2 * j] * fmaxf(d[4 * j + 2], 0.0f) + wv[2 * j + 1] * fmaxf(d[4 * j + 3], 0.0f);
    }
    s0 += __shfl_xor_sync(0xffffffffu, s0, 1);
    s1 += __shfl_xor_sync(0xffffffffu, s1, 1);
    s0 += __shfl_xor_sync(0xffffffffu, s0, 2);
    s1 += __shfl_xor_sync(0xffffffffu, s1, 2);
    if (tq == 0) {
      const float* sc = ssc + st * kWgKeys + warp * 16 + g;
      if (r0 < N) out[r0] = r0 < end ? s0 * sc[0] : -INFINITY;
      if (r1 < N) out[r1] = r1 < end ? s1 * sc[8] : -INFINITY;
    }
  }
  cp_async_wait<0>();
}

void launch_wgmma(const IndexerLogits& p, cudaStream_t stream) {
  static int sms = [] {
    int dev = 0, n = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    return n;
  }();
  static bool configured = false;
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(indexer_wgmma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(kWgSmem)));
    configured = true;
  }
  // One wave of blocks (5 fit an SM by shared memory) for small jobs, two for large ones (H200,
  // 128K keys: 1 x: 13.4 vs 15.1 us with two; 32 x: 202 vs 166 us = 2.74 vs 3.34 TB/s).
  const int64_t tiles = ceil_div(p.N, kWgKeys);
  const int64_t waves = tiles * p.S >= 32768 ? 2 : 1;
  const int64_t tpb =
      std::min<int64_t>(kWgMaxTiles, std::max<int64_t>(1, ceil_div(tiles * p.S, int64_t(sms) * 5 * waves)));
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(unsigned(ceil_div(tiles, tpb)), unsigned(p.S));
  cfg.blockDim = dim3(kWgThreads);
  cfg.dynamicSmemBytes = kWgSmem;
  cfg.stream = stream;
  cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = at;
  cfg.numAttrs = 1;
  static const bool fast = [] {  // DSA_INDEXER_FAST=1: tensor-core accumulation over 128 dims
    const char* e = std::getenv("DSA_INDEXER_FAST");
    return e && e[0] == '1';
  }();
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, indexer_wgmma_kernel, p, int(tpb), fast));
}

// Any shape: one thread per (query, key), scalar fp32 dots.
__global__ void indexer_scalar_kernel(IndexerLogits p) {
  const int t = blockIdx.y;
  const int64_t s = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (s >= p.N) return;
  float* out = p.out + int64_t(t) * p.N;
  if (s >= p.end[t]) {
    out[s] = -INFINITY;
    return;
  }
  const IndexPages& kp = p.k;
  const int64_t page = kp.block_table[int64_t(t) * kp.bt_stride + s / kp.page_size];
  const int64_t slot = s % kp.page_size;
  const uint8_t* pg = kp.pool + page * page_bytes(kp);
  const uint8_t* k = pg + slot * kp.D;
  float ks;
  memcpy(&ks, pg + kp.page_size * kp.D + 4 * slot, 4);
  float acc = 0.0f;
  for (int64_t h = 0; h < p.H; ++h) {
    const uint8_t* q = p.q + (int64_t(t) * p.H + h) * kp.D;
    float dot = 0.0f;
    for (int64_t d = 0; d < kp.D; ++d) dot += fp82f(q[d]) * fp82f(k[d]);
    acc += p.w[int64_t(t) * p.H + h] * fmaxf(dot, 0.0f);
  }
  out[s] = acc * ks;
}

}  // namespace

void indexer_logits(const IndexerLogits& p, cudaStream_t stream) {
  const IndexPages& kp = p.k;
  DSA_CUDA_REQUIRE(p.S > 0 && p.H > 0 && kp.D > 0 && p.N > 0 && kp.page_size > 0 && kp.num_pages > 0,
                   "indexer_logits: bad dims");
  DSA_CUDA_REQUIRE(p.q && p.w && kp.pool && kp.block_table && p.end && p.out,
                   "indexer_logits: null pointer");
  DSA_CUDA_REQUIRE(p.S <= 65535, "indexer_logits: S > 65535");
  // Tensor-core path: 16-byte aligned key rows (aligned pool, page_size % 4 == 0; a page is
  // 132 * page_size bytes), at most 64 heads (fewer are zero-padded), positions below 2^31.
  const bool fast = kp.D == 128 && p.H <= 64 && kp.page_size % 4 == 0 && p.N < (int64_t(1) << 31) &&
                    (reinterpret_cast<uintptr_t>(kp.pool) & 15) == 0;
  if (fast) {
    launch_wgmma(p, stream);
  } else {
    const dim3 grid(unsigned(ceil_div(p.N, 128)), unsigned(p.S));
    indexer_scalar_kernel<<<grid, 128, 0, stream>>>(p);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace dsa::ops::cuda
