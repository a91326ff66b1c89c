// Per-row top-k by radix selection (4 passes of 8 bits over order-preserving keys, no sort), then
// one ordered compaction pass: the result comes out sorted by index, ties at the k-th value
// resolved toward lower indices (the reference's choice).
#include <cmath>

#include "ops/cuda/common.cuh"

namespace dsa::ops::cuda {
namespace {
using namespace detail;

constexpr int kThreads = 1024;

// NaN counts as -inf and -0 as +0 (as the reference compares floats); larger float, larger key.
__device__ __forceinline__ uint32_t ord_key(float x) {
  if (isnan(x)) x = -INFINITY;
  if (x == 0.0f) x = 0.0f;
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Exclusive block scan of v (all threads participate); returns the prefix, *total the sum.
__device__ __forceinline__ uint32_t block_scan(uint32_t v, uint32_t* warp_tot, uint32_t* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint32_t x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) warp_tot[warp] = x;
  __syncthreads();
  if (warp == 0) {
    uint32_t w = warp_tot[lane];
    uint32_t s = w;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const uint32_t y = __shfl_up_sync(0xffffffffu, s, o);
      if (lane >= o) s += y;
    }
    warp_tot[lane] = s - w;  // exclusive
    if (lane == 31) warp_tot[32] = s;
  }
  __syncthreads();
  const uint32_t r = warp_tot[warp] + x - v;
  *total = warp_tot[32];
  __syncthreads();
  return r;
}

__global__ void __launch_bounds__(kThreads) topk_kernel(TopK p) {
  const int64_t t = blockIdx.x;
  const int64_t e = p.end[t], k = p.k;
  const float* sc = p.scores + t * p.N;
  int32_t* idx = p.idx + t * k;
  const int tid = threadIdx.x, lane = tid & 31;
  if (e <= k) {
    for (int64_t j = tid; j < k; j += kThreads) idx[j] = j < e ? int32_t(j) : -1;
    return;
  }
  __shared__ uint32_t hist[256];
  __shared__ uint32_t warp_tot[33];
  __shared__ uint32_t s_bucket, s_above;
  uint32_t prefix = 0, mask = 0, need = uint32_t(k);
  const bool vec = (reinterpret_cast<uintptr_t>(sc) & 15) == 0;
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    if (tid < 256) hist[tid] = 0;
    __syncthreads();
    // 4 consecutive scores per thread per step (one 16-byte load when aligned).
    const int64_t e_pad = (e + 4 * kThreads - 1) / (4 * kThreads) * (4 * kThreads);
    for (int64_t i0 = 4 * tid; i0 < e_pad; i0 += 4 * kThreads) {
      float v[4];
      if (vec && i0 + 4 <= e) {
        const float4 f = *reinterpret_cast<const float4*>(sc + i0);
        v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j) v[j] = i0 + j < e ? sc[i0 + j] : 0.0f;
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        uint32_t b = 0xffffffffu;
        if (i0 + j < e) {
          const uint32_t u = ord_key(v[j]);
          if ((u & mask) == prefix) b = (u >> shift) & 255u;
        }
        if (pass == 0) {  // few distinct top bytes: aggregate equal buckets across the warp
          const uint32_t peers = __match_any_sync(0xffffffffu, b);
          if (b != 0xffffffffu && lane == __ffs(peers) - 1) atomicAdd(&hist[b], __popc(peers));
        } else if (b != 0xffffffffu) {
          atomicAdd(&hist[b], 1u);
        }
      }
    }
    __syncthreads();
    if (tid < 32) {
      // Lane l owns buckets 255-8l .. 248-8l (descending); suffix counts from the top.
      uint32_t c[8], local = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        c[j] = hist[255 - 8 * lane - j];
        local += c[j];
      }
      uint32_t incl = local;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const uint32_t y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += y;
      }
      uint32_t above = incl - local;
      if (above < need && incl >= need) {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          if (above < need && above + c[j] >= need) {
            s_bucket = 255 - 8 * lane - j;
            s_above = above;
          }
          above += c[j];
        }
      }
    }
    __syncthreads();
    prefix |= s_bucket << shift;
    mask |= 255u << shift;
    need -= s_above;
    __syncthreads();
  }
  // prefix is the k-th largest key; take all keys above it and the first `need` equal to it.
  const uint32_t thr = prefix;
  uint32_t G = 0, E = 0;
  const uint32_t n_gt = uint32_t(k) - need;
  for (int64_t c0 = 0; c0 < e; c0 += 4 * kThreads) {
    const int64_t i0 = c0 + 4 * tid;
    uint32_t fl[4], cg = 0, ce = 0;
    float v[4];
    if (vec && i0 + 4 <= e) {
      const float4 f = *reinterpret_cast<const float4*>(sc + i0);
      v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) v[j] = i0 + j < e ? sc[i0 + j] : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      fl[j] = 0;
      if (i0 + j < e) {
        const uint32_t u = ord_key(v[j]);
        fl[j] = u > thr ? 1u : (u == thr ? 2u : 0u);
      }
      cg += fl[j] == 1u;
      ce += fl[j] == 2u;
    }
    uint32_t tot;
    const uint32_t pre = block_scan(cg | (ce << 16), warp_tot, &tot);
    uint32_t gb = G + (pre & 0xffffu), eb = E + (pre >> 16);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (fl[j] == 1u) {
        idx[gb + min(eb, need)] = int32_t(i0 + j);
        ++gb;
      } else if (fl[j] == 2u) {
        if (eb < need) idx[gb + eb] = int32_t(i0 + j);
        ++eb;
      }
    }
    G += tot & 0xffffu;
    E += tot >> 16;
    if (G >= n_gt && E >= need) break;
  }
}

}  // namespace

void topk(const TopK& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.S > 0 && p.N > 0 && p.k > 0, "topk: bad dims");
  DSA_CUDA_REQUIRE(p.scores && p.end && p.idx, "topk: null pointer");
  DSA_CUDA_REQUIRE(p.N < (int64_t(1) << 31) && p.k < 65536, "topk: N or k too large");
  topk_kernel<<<unsigned(p.S), kThreads, 0, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dsa::ops::cuda
