// Lightning-indexer logits over the paged FP8 key cache (spec §3.8) on FP8 tensor cores: an
// mma.sync m16n8k32 kernel with bulk copies (exact fp32 dots, the default), a Hopper warpgroup-MMA
// kernel (wgmma, 64 keys x 64 heads per tile; opt-in: faster, 13.3 vs 20.2 us at 128K keys and
// 166 vs 389 us at 32 x 128K on the H200, but FP8 tensor-core accumulation below fp32 precision),
// and a scalar kernel for other shapes.
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "ops/cuda/common.cuh"
#include "ops/cuda/wgmma.cuh"

namespace dsa::ops::cuda {
namespace {
using namespace detail;

// ---- Exact path (default): FP8 mma.sync m16n8k32, heads as the MMA rows, 8 keys as the columns;
// each 32-wide k-step is exact in fp32 on Hopper.
constexpr int kThreads = 256;      // 8 warps, each 32 keys (4 chunks of 8) per step
constexpr int kKeysPerStep = 256;  // keys per block step

// Paged keys through the bulk-copy engine (TMA): each step is 256 keys; a warp-0 lane issues one
// cp.async.bulk per (page, step) piece (keys, then scales) onto the step's mbarrier. A block walks
// `spb` steps through a ring of R stages; q fragments come straight from global memory while the
// page-table reads and the first copies are in flight.
constexpr int kMaxStages = 3;
constexpr size_t kStepSmem = size_t(kKeysPerStep) * 128 + kKeysPerStep * 4;

__device__ __forceinline__ int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return uint32_t(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred P1;\nLAB_WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
      "@P1 bra DONE;\nbra LAB_WAIT;\nDONE:\n}\n" ::"r"(smem_u32(bar)),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void bulk_g2s(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
          smem_u32(dst)),
      "l"(src), "r"(bytes), "r"(smem_u32(bar))
      : "memory");
}

// Warp 0: copies of step `stp` (keys [base, base + 256) of row t) into stage buffer kb.
__device__ __forceinline__ void issue_step(const IndexerLogits& p, const int32_t* bt, int64_t end,
                                           int64_t base, uint8_t* kb, uint64_t* bar, int lane) {
  const int64_t ps = p.k.page_size, pb = page_bytes(p.k);
  const int64_t hi = imin(base + kKeysPerStep, end);  // pages holding keys < end only
  const int64_t p0 = base / ps, p1 = hi > base ? (hi - 1) / ps : p0 - 1;
  const int nseg = int(p1 - p0 + 1);
  if (lane == 0) {
    // Whole pieces (up to the step's or the page's end): multiples of 8 keys, 16-byte sized.
    const int64_t last = imin(base + kKeysPerStep, (p1 + 1) * ps);
    const uint32_t bytes = nseg > 0 ? uint32_t(last - base) * 132u : 0u;
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)),
                 "r"(bytes)
                 : "memory");
  }
  __syncwarp();
  for (int i = lane; i < nseg; i += 32) {
    const int64_t pg = p0 + i;
    const int64_t s0 = imax(base, pg * ps), s1 = imin(base + kKeysPerStep, (pg + 1) * ps);
    const uint8_t* src = p.k.pool + int64_t(bt[pg]) * pb;
    const int64_t off = s0 - pg * ps, rel = s0 - base;
    bulk_g2s(kb + rel * 128, src + off * 128, uint32_t(s1 - s0) * 128u, bar);
    bulk_g2s(kb + kKeysPerStep * 128 + rel * 4, src + ps * 128 + off * 4, uint32_t(s1 - s0) * 4u, bar);
  }
}

template <int MT>
__global__ void __launch_bounds__(kThreads, MT == 3 ? 1 : 2) indexer_bulk_kernel(IndexerLogits p, int spb) {
  extern __shared__ __align__(128) uint8_t st[];
  __shared__ __align__(8) uint64_t bar[kMaxStages];
  const int t = blockIdx.y, tid = threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5, g = lane >> 2, tq = lane & 3;
  constexpr int H = MT * 16;
  const int64_t N = p.N;
  const int64_t s_first = int64_t(blockIdx.x) * spb;
  const int nst = int(imin(spb, cdiv(N, kKeysPerStep) - s_first));
  const int R = nst < kMaxStages ? nst : kMaxStages;
  if (tid == 0) {
    for (int i = 0; i < R; ++i)
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(smem_u32(&bar[i])) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  asm volatile("griddepcontrol.wait;\n" ::: "memory");  // q, w, cache from earlier kernels (PDL)
  const int64_t end = imin(p.end[t], N);
  const int32_t* bt = p.k.block_table + int64_t(t) * p.k.bt_stride;
  if (warp == 0)
    for (int i = 0; i < R; ++i)
      issue_step(p, bt, end, (s_first + i) * kKeysPerStep, st + i * kStepSmem, &bar[i], lane);
  // q fragments and head weights, overlapping the copies. D is permuted consistently in q and k:
  // lane (g, tq) holds bytes [tq*32, tq*32+32) of its row, and k-step kk uses words 2kk (MMA k
  // 4tq..4tq+3) and 2kk+1 (MMA k 16+4tq..); only the order of the fp32 sum over D changes.
  uint32_t a[MT][4][4];
  float wv[MT][2];
  const uint8_t* qt = p.q + int64_t(t) * H * 128;
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    const uint4* r0 = reinterpret_cast<const uint4*>(qt + (m * 16 + g) * 128 + tq * 32);
    const uint4* r1 = reinterpret_cast<const uint4*>(qt + (m * 16 + g + 8) * 128 + tq * 32);
    const uint4 x0 = __ldg(r0), x1 = __ldg(r0 + 1), y0 = __ldg(r1), y1 = __ldg(r1 + 1);
    const uint32_t xw[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
    const uint32_t yw[8] = {y0.x, y0.y, y0.z, y0.w, y1.x, y1.y, y1.z, y1.w};
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      a[m][kk][0] = xw[2 * kk];
      a[m][kk][1] = yw[2 * kk];
      a[m][kk][2] = xw[2 * kk + 1];
      a[m][kk][3] = yw[2 * kk + 1];
    }
    wv[m][0] = __ldg(p.w + int64_t(t) * H + m * 16 + g);
    wv[m][1] = __ldg(p.w + int64_t(t) * H + m * 16 + g + 8);
  }
  float* out = p.out + int64_t(t) * N;
  const bool al8 = (reinterpret_cast<uintptr_t>(out) & 7) == 0;
  const float ninf = -INFINITY;
  for (int i = 0; i < nst; ++i) {
    const int stage = i % R;
    const uint8_t* kb = st + stage * kStepSmem;
    const float* sb = reinterpret_cast<const float*>(kb + kKeysPerStep * 128);
    const int64_t base = (s_first + i) * kKeysPerStep;
    mbar_wait(&bar[stage], uint32_t(i / R) & 1u);
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int kk0 = warp * 32 + c * 8;
      const int64_t key0 = base + kk0;
      if (key0 >= N) break;
      if (key0 < end) {
        const uint4* src = reinterpret_cast<const uint4*>(kb + (kk0 + g) * 128 + tq * 32);
        const uint4 v0 = src[0], v1 = src[1];
        const uint32_t bw[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
        float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
          for (int kk = 0; kk < 4; ++kk) mma_fp8(acc, a[m][kk], bw[2 * kk], bw[2 * kk + 1]);
          s0 += wv[m][0] * fmaxf(acc[0], 0.0f) + wv[m][1] * fmaxf(acc[2], 0.0f);
          s1 += wv[m][0] * fmaxf(acc[1], 0.0f) + wv[m][1] * fmaxf(acc[3], 0.0f);
        }
#pragma unroll
        for (int o = 4; o < 32; o <<= 1) {
          s0 += __shfl_xor_sync(0xffffffffu, s0, o);
          s1 += __shfl_xor_sync(0xffffffffu, s1, o);
        }
        if (g == 0) {
          const int64_t s = key0 + 2 * tq;
          if (al8 && s + 1 < end) {
            *reinterpret_cast<float2*>(out + s) = make_float2(s0 * sb[kk0 + 2 * tq], s1 * sb[kk0 + 2 * tq + 1]);
          } else {
            if (s < N) out[s] = s < end ? s0 * sb[kk0 + 2 * tq] : ninf;
            if (s + 1 < N) out[s + 1] = s + 1 < end ? s1 * sb[kk0 + 2 * tq + 1] : ninf;
          }
        }
      } else if (lane < 8 && key0 + lane < N) {
        out[key0 + lane] = ninf;
      }
    }
    if (i + R < nst) {  // refill this stage once every warp is done with it
      __syncthreads();
      if (warp == 0)
        issue_step(p, bt, end, (s_first + i + R) * kKeysPerStep, st + stage * kStepSmem, &bar[stage], lane);
    }
  }
}

// Steps per block: about two blocks per SM in one wave for short rows, at most 32 steps.
template <int MT>
void launch_bulk(const IndexerLogits& p, cudaStream_t stream) {
  const int64_t steps = ceil_div(p.N, kKeysPerStep);
  const int64_t spb = std::min<int64_t>(32, std::max<int64_t>(1, ceil_div(steps * p.S, 264)));
  const size_t smem = size_t(std::min<int64_t>(kMaxStages, spb)) * kStepSmem;
  static bool configured = false;
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(indexer_bulk_kernel<MT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(kMaxStages * kStepSmem)));
    configured = true;
  }
  launch_pdl(indexer_bulk_kernel<MT>, dim3(unsigned(ceil_div(steps, spb)), unsigned(p.S)), dim3(kThreads), smem,
             stream, p, int(spb));
}


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
__global__ void __launch_bounds__(kWgThreads) indexer_wgmma_kernel(IndexerLogits p, int tpb) {
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
  float d[32];  // fresh per tile (the first k-step overwrites it)
#pragma unroll
  for (int x = 0; x < 32; ++x) d[x] = 0.0f;
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
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) wgmma_fp8<64>(d, dk + 2 * kk, dq + 2 * kk, kk);
    wg_commit();
    wg_wait0();
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
  launch_pdl(indexer_wgmma_kernel, dim3(unsigned(ceil_div(tiles, tpb)), unsigned(p.S)), dim3(kWgThreads), kWgSmem,
             stream, p, int(tpb));
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
  // Tensor-core paths need 16-byte aligned key rows (aligned pool, page_size % 4 == 0; a page is
  // 132 * page_size bytes). wgmma (opt-in, fp8_wgmma(): any H <= 64, fewer heads zero-padded)
  // or the exact mma.sync kernel (H % 16 == 0, page_size % 8 == 0); else the scalar kernel.
  const bool aligned = kp.D == 128 && p.H <= 64 && kp.page_size % 4 == 0 &&
                       (reinterpret_cast<uintptr_t>(kp.pool) & 15) == 0;
  if (aligned && fp8_wgmma() && p.N < (int64_t(1) << 31)) {
    launch_wgmma(p, stream);
  } else if (aligned && p.H % 16 == 0 && kp.page_size % 8 == 0) {
    switch (p.H / 16) {
      case 1: launch_bulk<1>(p, stream); break;
      case 2: launch_bulk<2>(p, stream); break;
      case 3: launch_bulk<3>(p, stream); break;
      default: launch_bulk<4>(p, stream); break;
    }
  } else {
    const dim3 grid(unsigned(ceil_div(p.N, 128)), unsigned(p.S));
    indexer_scalar_kernel<<<grid, 128, 0, stream>>>(p);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace dsa::ops::cuda
