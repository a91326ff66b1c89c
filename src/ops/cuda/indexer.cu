// Lightning-indexer logits over the paged FP8 key cache (spec §3.8) on FP8 tensor cores
// (mma.sync m16n8k32 e4m3): heads are the MMA rows, 8 keys the columns, D = 128 the reduction.
#include <algorithm>
#include <cmath>

#include "ops/cuda/common.cuh"

namespace dsa::ops::cuda {
namespace {
using namespace detail;

constexpr int kThreads = 256;      // 8 warps, each 32 keys (4 chunks of 8) per step
constexpr int kKeysPerStep = 256;  // keys per block step

// D is permuted consistently in q and k: lane (g, tq) holds bytes [tq*32, tq*32+32) of its row,
// and k-step kk uses words 2kk (MMA k 4tq..4tq+3) and 2kk+1 (MMA k 16+4tq..). The dot over D is
// unchanged; only the order of the fp32 sum differs.
template <int MT>
__global__ void __launch_bounds__(kThreads) indexer_mma_kernel(IndexerLogits p, int64_t kpb) {
  const int t = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, tq = lane & 3;
  constexpr int H = MT * 16;
  __shared__ __align__(16) uint8_t qs[H * 128];
  const uint4* qrow = reinterpret_cast<const uint4*>(p.q + int64_t(t) * H * 128);
  for (int i = threadIdx.x; i < H * 8; i += kThreads) reinterpret_cast<uint4*>(qs)[i] = qrow[i];
  __syncthreads();
  uint32_t a[MT][4][4];
  float wv[MT][2];
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    const uint4* r0 = reinterpret_cast<const uint4*>(qs + (m * 16 + g) * 128 + tq * 32);
    const uint4* r1 = reinterpret_cast<const uint4*>(qs + (m * 16 + g + 8) * 128 + tq * 32);
    const uint4 x0 = r0[0], x1 = r0[1], y0 = r1[0], y1 = r1[1];
    const uint32_t xw[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
    const uint32_t yw[8] = {y0.x, y0.y, y0.z, y0.w, y1.x, y1.y, y1.z, y1.w};
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      a[m][kk][0] = xw[2 * kk];
      a[m][kk][1] = yw[2 * kk];
      a[m][kk][2] = xw[2 * kk + 1];
      a[m][kk][3] = yw[2 * kk + 1];
    }
    wv[m][0] = p.w[int64_t(t) * H + m * 16 + g];
    wv[m][1] = p.w[int64_t(t) * H + m * 16 + g + 8];
  }
  const int64_t N = p.N, end = p.end[t], ps = p.k.page_size, pb = page_bytes(p.k);
  const int32_t* bt = p.k.block_table + int64_t(t) * p.k.bt_stride;
  float* out = p.out + int64_t(t) * N;
  const int64_t k0 = int64_t(blockIdx.x) * kpb, k1 = min(k0 + kpb, N);
  const float ninf = -INFINITY;
  for (int64_t base = k0 + warp * 32; base < k1; base += kKeysPerStep) {
    uint4 kv[4][2];
    float2 sc[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int64_t key0 = base + c * 8;
      if (key0 < end) {
        const int64_t page = bt[key0 / ps], slot = key0 % ps;
        const uint8_t* pg = p.k.pool + page * pb;
        const uint4* src = reinterpret_cast<const uint4*>(pg + (slot + g) * 128 + tq * 32);
        kv[c][0] = __ldcs(src);
        kv[c][1] = __ldcs(src + 1);
        sc[c] = *reinterpret_cast<const float2*>(pg + ps * 128 + (slot + 2 * tq) * 4);
      }
    }
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int64_t key0 = base + c * 8;
      if (key0 >= k1) break;
      if (key0 < end) {
        const uint32_t bw[8] = {kv[c][0].x, kv[c][0].y, kv[c][0].z, kv[c][0].w,
                                kv[c][1].x, kv[c][1].y, kv[c][1].z, kv[c][1].w};
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
          if (s < k1) out[s] = s < end ? s0 * sc[c].x : ninf;
          if (s + 1 < k1) out[s + 1] = s + 1 < end ? s1 * sc[c].y : ninf;
        }
      } else if (lane < 8 && key0 + lane < k1) {
        out[key0 + lane] = ninf;
      }
    }
  }
}

// Decode (small S): a block stages all its keys (up to kMaxSteps x 256) in shared memory with
// cp.async before computing, so each SM has ~150 KB of key reads in flight; same MMA math as above.
constexpr int kMaxSteps = 4;
constexpr int kRow = 144;  // staged key row stride (128 B + 16: conflict-free 16-byte reads)
constexpr size_t kStepSmem = size_t(kKeysPerStep) * kRow + kKeysPerStep * 4;

template <int MT>
__global__ void __launch_bounds__(kThreads, 1) indexer_staged_kernel(IndexerLogits p, int steps) {
  extern __shared__ __align__(16) uint8_t st[];
  const int t = blockIdx.y, tid = threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5, g = lane >> 2, tq = lane & 3;
  constexpr int H = MT * 16;
  const int64_t N = p.N, end = p.end[t], ps = p.k.page_size, pb = page_bytes(p.k);
  const int32_t* bt = p.k.block_table + int64_t(t) * p.k.bt_stride;
  const int64_t k0 = int64_t(blockIdx.x) * steps * kKeysPerStep;
  // Page ids of this block's keys first (one parallel load), so no copy waits on a table read.
  __shared__ int64_t pgo[kMaxSteps * kKeysPerStep / 8 + 2];
  const int ips = int(ps), p_first = int(k0 / ps);
  const int64_t kend = imin(end, k0 + int64_t(steps) * kKeysPerStep);
  const int npg = kend > k0 ? int((kend - 1) / ps) - p_first + 1 : 0;
  for (int i = tid; i < npg; i += kThreads) pgo[i] = int64_t(bt[p_first + i]) * pb;
  __syncthreads();
  // Issue every step's copies (one commit group per step).
  for (int stp = 0; stp < steps; ++stp) {
    uint8_t* kb = st + stp * kStepSmem;
    float* sb = reinterpret_cast<float*>(kb + kKeysPerStep * kRow);
    const int64_t base = k0 + int64_t(stp) * kKeysPerStep;
    for (int c = tid; c < kKeysPerStep * 8 + kKeysPerStep / 4; c += kThreads) {
      if (c < kKeysPerStep * 8) {
        const int kk = c >> 3, ch = c & 7;
        const int64_t key = base + kk;
        if (key < end) {
          const int rel = int(key - int64_t(p_first) * ips);
          const uint8_t* src = p.k.pool + pgo[rel / ips] + (rel % ips) * 128 + ch * 16;
          asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(
                           uint32_t(__cvta_generic_to_shared(kb + kk * kRow + ch * 16))),
                       "l"(src));
        }
      } else {
        const int kk = (c - kKeysPerStep * 8) * 4;
        const int64_t key = base + kk;
        if (key < end) {  // 4 scales of one page (key % 4 == 0, page_size % 8 == 0)
          const int rel = int(key - int64_t(p_first) * ips);
          const uint8_t* src = p.k.pool + pgo[rel / ips] + ps * 128 + (rel % ips) * 4;
          asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(
                           uint32_t(__cvta_generic_to_shared(sb + kk))),
                       "l"(src));
        }
      }
    }
    asm volatile("cp.async.commit_group;\n");
  }
  __shared__ __align__(16) uint8_t qs[H * 128];
  const uint4* qrow = reinterpret_cast<const uint4*>(p.q + int64_t(t) * H * 128);
  for (int i = tid; i < H * 8; i += kThreads) reinterpret_cast<uint4*>(qs)[i] = qrow[i];
  __syncthreads();
  uint32_t a[MT][4][4];
  float wv[MT][2];
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    const uint4* r0 = reinterpret_cast<const uint4*>(qs + (m * 16 + g) * 128 + tq * 32);
    const uint4* r1 = reinterpret_cast<const uint4*>(qs + (m * 16 + g + 8) * 128 + tq * 32);
    const uint4 x0 = r0[0], x1 = r0[1], y0 = r1[0], y1 = r1[1];
    const uint32_t xw[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
    const uint32_t yw[8] = {y0.x, y0.y, y0.z, y0.w, y1.x, y1.y, y1.z, y1.w};
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      a[m][kk][0] = xw[2 * kk];
      a[m][kk][1] = yw[2 * kk];
      a[m][kk][2] = xw[2 * kk + 1];
      a[m][kk][3] = yw[2 * kk + 1];
    }
    wv[m][0] = p.w[int64_t(t) * H + m * 16 + g];
    wv[m][1] = p.w[int64_t(t) * H + m * 16 + g + 8];
  }
  float* out = p.out + int64_t(t) * N;
  const float ninf = -INFINITY;
  for (int stp = 0; stp < steps; ++stp) {
    switch (steps - 1 - stp) {  // groups still allowed in flight
      case 0: asm volatile("cp.async.wait_group 0;\n" ::: "memory"); break;
      case 1: asm volatile("cp.async.wait_group 1;\n" ::: "memory"); break;
      case 2: asm volatile("cp.async.wait_group 2;\n" ::: "memory"); break;
      default: asm volatile("cp.async.wait_group 3;\n" ::: "memory"); break;
    }
    __syncthreads();
    const uint8_t* kb = st + stp * kStepSmem;
    const float* sb = reinterpret_cast<const float*>(kb + kKeysPerStep * kRow);
    const int64_t base = k0 + int64_t(stp) * kKeysPerStep;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int kk0 = warp * 32 + c * 8;
      const int64_t key0 = base + kk0;
      if (key0 >= N) break;
      if (key0 < end) {
        const uint4* src = reinterpret_cast<const uint4*>(kb + (kk0 + g) * kRow + tq * 32);
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
          if (s < N) out[s] = s < end ? s0 * sb[kk0 + 2 * tq] : ninf;
          if (s + 1 < N) out[s + 1] = s + 1 < end ? s1 * sb[kk0 + 2 * tq + 1] : ninf;
        }
      } else if (lane < 8 && key0 + lane < N) {
        out[key0 + lane] = ninf;
      }
    }
  }
}

template <int MT>
void launch_staged(const IndexerLogits& p, cudaStream_t stream) {
  const int64_t steps = ceil_div(p.N, kKeysPerStep);
  const int64_t per = std::min<int64_t>(kMaxSteps, std::max<int64_t>(1, ceil_div(steps * p.S, 132)));
  const size_t smem = size_t(per) * kStepSmem;
  static size_t configured = 0;
  if (smem > configured) {
    CUDA_CHECK(cudaFuncSetAttribute(indexer_staged_kernel<MT>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    configured = smem;
  }
  const dim3 grid(unsigned(ceil_div(steps, per)), unsigned(p.S));
  indexer_staged_kernel<MT><<<grid, kThreads, smem, stream>>>(p, int(per));
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
  const bool fast = kp.D == 128 && p.H % 16 == 0 && p.H <= 64 && kp.page_size % 8 == 0;
  // Staged decode path: a handful of query rows (one wave of <= 4-step blocks).
  const bool staged = fast && ceil_div(ceil_div(p.N, kKeysPerStep), kMaxSteps) * p.S <= 132 * 2 &&
                      kp.page_size % 8 == 0;
  if (staged) {
    switch (p.H / 16) {
      case 1: launch_staged<1>(p, stream); break;
      case 2: launch_staged<2>(p, stream); break;
      case 3: launch_staged<3>(p, stream); break;
      default: launch_staged<4>(p, stream); break;
    }
  } else if (fast) {
    // Enough blocks to fill the chip; each block covers kpb keys of one query row.
    const int64_t steps = ceil_div(p.N, kKeysPerStep);
    const int64_t want_blocks = 132 * 4;
    const int64_t per_row = std::max<int64_t>(1, want_blocks / p.S);
    const int64_t iters = std::min<int64_t>(16, std::max<int64_t>(1, ceil_div(steps, per_row)));
    const int64_t kpb = iters * kKeysPerStep;
    const dim3 grid(unsigned(ceil_div(p.N, kpb)), unsigned(p.S));
    switch (p.H / 16) {
      case 1: indexer_mma_kernel<1><<<grid, kThreads, 0, stream>>>(p, kpb); break;
      case 2: indexer_mma_kernel<2><<<grid, kThreads, 0, stream>>>(p, kpb); break;
      case 3: indexer_mma_kernel<3><<<grid, kThreads, 0, stream>>>(p, kpb); break;
      default: indexer_mma_kernel<4><<<grid, kThreads, 0, stream>>>(p, kpb); break;
    }
  } else {
    const dim3 grid(unsigned(ceil_div(p.N, 128)), unsigned(p.S));
    indexer_scalar_kernel<<<grid, 128, 0, stream>>>(p);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace dsa::ops::cuda
