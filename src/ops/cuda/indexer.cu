// Lightning-indexer logits over the paged FP8 key cache (spec §3.8) on Hopper warpgroup MMA
// (wgmma), 64 keys x 64 heads x 128 dims per tile, and a scalar kernel for other shapes. Two
// tensor-core variants share the tile pipeline:
//   exact (the default): f16 wgmma. Each warp converts its keys' e4m3 bytes to f16 in registers
//     (the register A operand) and q is converted once into f16 B tiles; e4m3 -> f16 is exact and
//     products are exact in the fp32 accumulator.
//   FP8 (opt-in, fp8_wgmma()): e4m3 wgmma straight from shared memory; ~15 % faster, but the FP8
//     instruction accumulates below fp32 precision (see docs/design.md).
// (sm_90 has no e4m3 mma.sync: ptxas lowers it to f16 HMMAs plus 12 conversions per instruction.
// The former exact kernel, built on it, streamed 1.5 TB/s at 64 x 128K keys on the H200; ncu showed
// it issue-bound on those conversions and on its mma chains.)
#include <algorithm>
#include <cmath>
#include <cstdint>

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
constexpr int kWgMaxTiles = 128; // tiles per warpgroup at most
constexpr size_t kWgTileBytes = size_t(kWgKeys) * 128;           // 8 KB, 1024-aligned
// Per variant: warpgroups per block (sharing q), cp.async ring depth per warpgroup, q bytes in
// shared memory (FP8 rows of 128 B, or f16 as two 64-dim column blocks of 64 x 128 B). The FP8
// variant fits 5 one-warpgroup blocks of 4 stages per SM; the exact one (128 registers: 4
// warpgroups per SM) puts its 4 warpgroups in one block around one q copy, with 6 stages each.
// (4 blocks of one warpgroup and 4 stages measured the same: the exact kernel is bound by its
// per-tile instruction latency with 4 warps per scheduler, not by the bytes in flight; ncu:
// ~390 instructions per tile and warp before the 32-bit index math, shared-space loads and fma
// epilogue trimmed it.)
template <bool kExact>
struct WgCfg {
  static constexpr int kWgs = kExact ? 4 : 1, kStages = kExact ? 6 : 4, kThreads = 128 * kWgs;
  static constexpr size_t kQ = size_t(kWgHeads) * 128 * (kExact ? 2 : 1);
  static constexpr size_t kStage = kWgTileBytes + kWgKeys * 4;
  static constexpr size_t kSmem = 1024 /*align slack*/ + kQ + size_t(kWgs) * kStages * kStage;
};

// Exact variant (kExact, the default): the same ring and tiles, but f16 wgmma, whose fp32
// accumulation keeps every product exact (unlike the FP8 instruction's): each warp reads its 16
// keys' FP8 bytes from the tile, converts them to f16 in registers and passes them as the register
// A operand; q is converted once into f16 B tiles. D is permuted consistently in q and keys: lane
// (g, tq) holds bytes [32 tq, 32 tq + 32) of its two keys; k16-step j takes word j of them, its
// low two bytes as MMA k 2tq, 2tq + 1 and its high two as k 8 + 2tq, 9 + 2tq; q's f16 tiles
// store dim 32 tq + 4 j + 2 h + e at logical k 16 j + 8 h + 2 tq + e to match. Only the order
// of the fp32 sum over D changes.
//
// Block = query row t, kWgs warpgroups; warpgroup wg takes tiles [(blockIdx.x kWgs + wg) tpb,
// +tpb) of 64 keys through its own ring; keys at or past end[t] are never read (logits -inf).
template <bool kExact>
__global__ void __launch_bounds__(WgCfg<kExact>::kThreads) indexer_wgmma_kernel(IndexerLogits p, int tpb) {
  using C = WgCfg<kExact>;
  constexpr int kWgStages = C::kStages;
  extern __shared__ uint8_t wg_raw[];
  __shared__ int32_t s_pg_all[C::kWgs][kWgMaxTiles];  // page id of each tile (pages holding whole tiles)
  const int wg = threadIdx.x >> 7;
  int32_t* s_pg = s_pg_all[wg];
  // 1024-aligned base, derived from wg_raw by pointer arithmetic so that the compiler keeps the
  // shared address space (LDS, not generic loads, for the tiles and scales).
  uint8_t* sm = wg_raw + ((1024u - (smem_addr(wg_raw) & 1023u)) & 1023u);
  uint8_t* qs = sm;                                                 // q, swizzled
  uint8_t* ks = sm + C::kQ + size_t(wg) * kWgStages * kWgTileBytes;  // [stages][64 keys][128 B], swizzled
  float* ssc = reinterpret_cast<float*>(sm + C::kQ + size_t(C::kWgs) * kWgStages * kWgTileBytes) +
               wg * kWgStages * kWgKeys;                            // [stages][64] scales
  // tid: thread of the warpgroup; the loop's barrier is the warpgroup's (named barrier 1 + wg).
  const int tid = threadIdx.x & 127, lane = tid & 31, warp = tid >> 5, g = lane >> 2, tq = lane & 3;
  auto wg_sync = [&] { asm volatile("bar.sync %0, 128;\n" ::"r"(1 + wg) : "memory"); };
  const int t = blockIdx.y;
  // Key positions in 32 bits (the launch requires N < 2^31): 64-bit index math was a large part
  // of the per-tile instructions.
  const int N = int(p.N), H = int(p.H);
  const int64_t ps = p.k.page_size, pb = page_bytes(p.k);
  const int ntiles = int(cdiv(N, kWgKeys));
  const int tile0 = (int(blockIdx.x) * C::kWgs + wg) * tpb;
  const int nt = max(0, min(tpb, ntiles - tile0));
  asm volatile("griddepcontrol.wait;\n" ::: "memory");  // q, w, cache from earlier kernels (PDL)
  // Let a PDL-launched successor (top-k) be scheduled now; it waits for this grid's completion.
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  const int end = int(imin(p.end[t], N));
  const int32_t* bt = p.k.block_table + int64_t(t) * p.k.bt_stride;
  // Keys of tile `i` (local index) into stage `st`: 512 16-byte chunks + 64 scales. Thread tid
  // copies chunk tid & 7 of keys (tid >> 3) + 16r; 32-bit page arithmetic (a shift for
  // power-of-two pages): 64-bit divisions here made the kernel issue-bound.
  const uint32_t ps32 = uint32_t(ps);
  const int sh = (ps & (ps - 1)) == 0 ? __ffs(int(ps)) - 1 : -1;
  const int ch = tid & 7;
  const bool whole = ps % kWgKeys == 0;  // every tile inside one page: one table read per tile
  auto issue = [&](int i, int st) {
    const int base = (tile0 + i) * kWgKeys;
    const uint32_t kdst = smem_addr(ks + st * kWgTileBytes);
    const uint32_t sdst = smem_addr(ssc + st * kWgKeys);
    if (whole) {
      const uint32_t b = uint32_t(base);
      const uint32_t pi = sh >= 0 ? b >> sh : b / ps32;
      const uint8_t* pg = p.k.pool + int64_t(s_pg[i]) * pb;
      const uint32_t slot0 = b - pi * ps32;
      const int nvalid = min(kWgKeys, end - base);
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
    for (int i = tid; i < nt; i += 128) {
      const uint32_t b = uint32_t((tile0 + i) * kWgKeys);
      s_pg[i] = live(i) ? bt[sh >= 0 ? b >> sh : b / ps32] : 0;
    }
    wg_sync();
  }
#pragma unroll
  for (int i = 0; i < kWgStages - 1; ++i) {
    if (live(i)) issue(i, i);
    cp_async_commit();
  }
  // q rows (zero rows for heads >= H) and this thread's head weights: columns 8j + 2tq (+1).
  const uint8_t* qt = p.q + int64_t(t) * H * 128;
  if constexpr (kExact) {
    // Chunk (h, j, hh) of the f16 B tile (f16_b_chunk); zero rows for heads >= H.
    for (int c = threadIdx.x; c < kWgHeads * 16; c += C::kThreads) {
      const int h = c >> 4, j = (c >> 1) & 7, hh = c & 1;
      auto pair = [&](int d) { return uint32_t(__ldg(reinterpret_cast<const uint16_t*>(qt + h * 128 + d))); };
      *reinterpret_cast<uint4*>(qs + f16_b_offset(h, j, hh, kWgHeads * 128)) =
          h < H ? f16_b_chunk(pair, j, hh) : make_uint4(0, 0, 0, 0);
    }
  } else {
    for (int c = threadIdx.x; c < kWgHeads * 8; c += C::kThreads) {
      const int h = c >> 3, ch = c & 7;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (h < H) v = __ldg(reinterpret_cast<const uint4*>(qt + h * 128 + ch * 16));
      *reinterpret_cast<uint4*>(qs + swz128(h, ch)) = v;
    }
  }
  fence_async_smem();  // q (all warpgroups' writes) -> wgmma operand reads
  __syncthreads();
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
    wg_sync();  // tile i in place; every thread is done with tile i - 1's stage
    if (live(i + kWgStages - 1)) issue(i + kWgStages - 1, (i + kWgStages - 1) % kWgStages);
    cp_async_commit();
    const int base = (tile0 + i) * kWgKeys;
    const int r0 = base + warp * 16 + g, r1 = r0 + 8;  // this thread's two keys
    if (!live(i)) {  // past end: no reads, -inf
      if (tq == 0) {
        if (r0 < N) out[r0] = -INFINITY;
        if (r1 < N) out[r1] = -INFINITY;
      }
      continue;
    }
    if constexpr (kExact) {
      // This thread's keys r0 - base, r1 - base: rows 16 warp + g (+ 8) of the tile.
      uint32_t a[8][4];
      fp8_rows_f16_frags(ks + st * kWgTileBytes + warp * 16 * 128, g, tq, a);
      wg_fence();
#pragma unroll
      for (int j = 0; j < 8; ++j)
        wgmma_f16_rs<64>(d, a[j], f16_b_desc(dq, j, kWgHeads * 128), j);
    } else {
      const uint64_t dk = wg_desc(smem_addr(ks + st * kWgTileBytes));
      wg_fence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) wgmma_fp8<64>(d, dk + 2 * kk, dq + 2 * kk, kk);
    }
    wg_commit();
    wg_wait0();
    // d[4j + e]: row r0 (e = 0, 1) or r1 (e = 2, 3), head 8j + 2tq + (e & 1).
    // Two fma chains per key (even / odd head columns), joined at the end.
    float s0 = 0.0f, s1 = 0.0f, u0 = 0.0f, u1 = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      s0 = fmaf(wv[2 * j], fmaxf(d[4 * j], 0.0f), s0);
      u0 = fmaf(wv[2 * j + 1], fmaxf(d[4 * j + 1], 0.0f), u0);
      s1 = fmaf(wv[2 * j], fmaxf(d[4 * j + 2], 0.0f), s1);
      u1 = fmaf(wv[2 * j + 1], fmaxf(d[4 * j + 3], 0.0f), u1);
    }
    s0 += u0;
    s1 += u1;
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

template <bool kExact>
void launch_wgmma(const IndexerLogits& p, cudaStream_t stream) {
  using C = WgCfg<kExact>;
  constexpr size_t smem = C::kSmem;
  static_assert(smem + sizeof(int32_t) * C::kWgs * kWgMaxTiles <= 232448, "over sm_90's shared memory");
  constexpr int blocks_per_sm = int(std::min<size_t>(5, (227 * 1024) / (smem + 1024)));
  static bool configured = false;
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(indexer_wgmma_kernel<kExact>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(smem)));
    configured = true;
  }
  // Tiles per warpgroup: the cost model is waves x (tiles per warpgroup + ~8 tiles of block start
  // (q staging, ring fill)), over the block counts an SM-wide grid allows; ties go to fewer blocks.
  // (H200, 64 x 128K keys: the former rule, ~2 waves of equal blocks, gave 125 tiles per
  // warpgroup in 5 blocks per row, 2.4 waves rounded up to 3.) The search is cached for the last
  // shape: every layer of a decode step has the same one.
  const int64_t tiles = ceil_div(p.N, kWgKeys);
  thread_local int64_t last_tiles = -1, last_s = -1, last_tpb = 1;
  if (tiles != last_tiles || p.S != last_s) {
    const int64_t slots = int64_t(sm_count()) * blocks_per_sm;  // blocks resident at once
    int64_t best = INT64_MAX;
    for (int64_t cand = kWgMaxTiles; cand >= 1; --cand) {
      const int64_t bpr = ceil_div(tiles, cand * C::kWgs);
      const int64_t per = ceil_div(tiles, bpr * C::kWgs);  // tiles of the fullest warpgroup
      const int64_t cost = ceil_div(p.S * bpr, slots) * (per + 8);
      if (cost < best) best = cost, last_tpb = per;
    }
    last_tiles = tiles;
    last_s = p.S;
  }
  const int64_t tpb = last_tpb;
  launch_pdl(indexer_wgmma_kernel<kExact>, dim3(unsigned(ceil_div(tiles, tpb * C::kWgs)), unsigned(p.S)),
             dim3(C::kThreads), smem, stream, p, int(tpb));
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
  // The wgmma kernels need 16-byte aligned key rows (aligned pool, page_size % 4 == 0; a page is
  // 132 * page_size bytes), D = 128, H <= 64 (fewer heads zero-padded) and N < 2^31; exact f16
  // by default, FP8 when opted in (fp8_wgmma()); any other shape runs the scalar kernel.
  const bool aligned = kp.D == 128 && p.H <= 64 && kp.page_size % 4 == 0 &&
                       (reinterpret_cast<uintptr_t>(kp.pool) & 15) == 0;
  if (aligned && p.N < (int64_t(1) << 31)) {
    if (fp8_wgmma()) launch_wgmma<false>(p, stream);
    else launch_wgmma<true>(p, stream);
  } else {
    const dim3 grid(unsigned(ceil_div(p.N, 128)), unsigned(p.S));
    indexer_scalar_kernel<<<grid, 128, 0, stream>>>(p);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace dsa::ops::cuda
