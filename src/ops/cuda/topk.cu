// Per-row top-k by radix selection (4 passes of 8 bits over order-preserving keys, no sort), then
// an ordered compaction: indices sorted ascending, ties at the k-th value toward lower indices.
#include <cooperative_groups.h>

#include <algorithm>
#include <cmath>

#include "ops/cuda/common.cuh"

namespace dsa::ops::cuda {
namespace {
using namespace detail;
namespace cg = cooperative_groups;

constexpr int kThreads = 1024;
constexpr int kMaxCluster = 8;  // portable cluster size: CTAs (SMs) per row

__device__ __forceinline__ void griddep_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void cluster_arrive() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() {
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}

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

// Scores [i0, i0 + 4) of a row of e (zeros past e); one 16-byte load when aligned and whole.
__device__ __forceinline__ void load4(const float* sc, int64_t i0, int64_t e, bool vec, float (&v)[4]) {
  if (vec && i0 + 4 <= e) {
    const float4 f = *reinterpret_cast<const float4*>(sc + i0);
    v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
    return;
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) v[j] = i0 + j < e ? sc[i0 + j] : 0.0f;
}

// Warp 0: the bucket holding the need-th largest key of a 256-bucket histogram, and how many
// keys lie in the buckets above it. Lane l owns buckets 255-8l .. 248-8l (descending); suffix
// counts from the top; exactly one lane writes the result.
__device__ __forceinline__ void threshold_bucket(const uint32_t* hist, uint32_t need, int lane,
                                                 uint32_t* bucket, uint32_t* above_out) {
  uint32_t c[8], local = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    c[j] = hist[255 - 8 * lane - j];
    local += c[j];
  }
  const uint32_t incl = warp_incl_scan(local, lane);
  uint32_t above = incl - local;
  if (above < need && incl >= need) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if (above < need && above + c[j] >= need) {
        *bucket = 255 - 8 * lane - j;
        *above_out = above;
      }
      above += c[j];
    }
  }
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
      load4(sc, i0, e, vec, v);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        uint32_t b = 0xffffffffu;
        if (i0 + j < e) {
          const uint32_t u = ord_key(v[j]);
          if ((u & mask) == prefix) b = (u >> shift) & 255u;
        }
        const uint32_t b0 = __shfl_sync(0xffffffffu, b, 0);
        if (__all_sync(0xffffffffu, b == b0)) {  // whole warp in one bucket: one add
          if (lane == 0 && b0 != 0xffffffffu) atomicAdd(&hist[b0], 32u);
        } else if (b != 0xffffffffu) {
          atomicAdd(&hist[b], 1u);
        }
      }
    }
    __syncthreads();
    if (tid < 32) threshold_bucket(hist, need, lane, &s_bucket, &s_above);
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
    load4(sc, i0, e, vec, v);
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


// Few rows: a cluster of CL CTAs per row (grid.x = CL, grid.y = row). Each thread keeps `cnt`
// consecutive keys of the row in registers (read once); per pass every CTA histograms its keys in
// shared memory, and after a cluster barrier every CTA sums the CL histograms over distributed
// shared memory and finds the same threshold bucket. The compaction offsets of each CTA come from
// the (greater, equal) counts of the CTAs before it, so the output is ordered by index.
template <int V>
__global__ void __launch_bounds__(kThreads, 1) topk_cluster_kernel(TopK p) {
  cg::cluster_group cl = cg::this_cluster();
  const int CL = int(cl.num_blocks()), rank = int(cl.block_rank());
  const int64_t t = blockIdx.y, k = p.k;
  const int tid = threadIdx.x, lane = tid & 31;
  griddep_wait();  // scores may come from the kernel launched just before (PDL)
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");  // successors wait for us
  const int64_t e = imin(p.end[t], p.N);
  int32_t* idx = p.idx + t * k;
  if (e <= k) {  // uniform over the cluster: no barrier, no remote access
    for (int64_t j = int64_t(rank) * kThreads + tid; j < k; j += int64_t(CL) * kThreads)
      idx[j] = j < e ? int32_t(j) : -1;
    return;
  }
  __shared__ uint32_t hist[4][256];
  __shared__ uint32_t tot[256];
  __shared__ uint32_t warp_tot[33];
  __shared__ uint32_t s_bucket, s_above, s_cnt[2];
  for (int i = tid; i < 4 * 256; i += kThreads) (&hist[0][0])[i] = 0;
  // Keys [lo, lo + cnt) of this thread; 0 marks "no key" (ord_key never returns 0).
  const int64_t per = int64_t(CL) * kThreads * 4;
  const int cnt = int((e + per - 1) / per) * 4;
  const int64_t lo = (int64_t(rank) * kThreads + tid) * cnt;
  const float* sc = p.scores + t * p.N;
  const bool vec = (reinterpret_cast<uintptr_t>(sc) & 15) == 0;
  uint32_t key[V];
#pragma unroll
  for (int q = 0; q < V / 4; ++q) {
    const int64_t i0 = lo + 4 * q;
    float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    const bool in = 4 * q < cnt;
    if (in && vec && i0 + 4 <= e) {
      const float4 f = __ldcg(reinterpret_cast<const float4*>(sc + i0));
      v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
    } else if (in) {
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (i0 + j < e) v[j] = sc[i0 + j];
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) key[4 * q + j] = in && i0 + j < e ? ord_key(v[j]) : 0u;
  }
  __syncthreads();
  uint32_t prefix = 0, mask = 0, need = uint32_t(k);
  // live: bit j set while key j still matches the prefix. After pass 0 few keys do, so later
  // passes only test a bit per key (the kernel is issue-bound: ~2000 instructions per warp).
  uint32_t live = 0;
#pragma unroll
  for (int j = 0; j < V; ++j) live |= key[j] != 0u ? 1u << j : 0u;
#pragma unroll 1
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    uint32_t* h = hist[pass];
    if (pass == 0) {
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const uint32_t u = key[j];
        const uint32_t b = u != 0u ? u >> 24 : 0xffffffffu;
        const uint32_t b0 = __shfl_sync(0xffffffffu, b, 0);
        // Whole warp in one bucket: one add. No __match_any_sync: it costs ~100 cycles of the
        // SM per call and dominated an older kernel (~1.6 us per key per thread).
        if (__all_sync(0xffffffffu, b == b0)) {
          if (lane == 0 && b0 != 0xffffffffu) atomicAdd(&h[b0], 32u);
        } else if (b != 0xffffffffu) {
          atomicAdd(&h[b], 1u);
        }
      }
    } else if (live != 0u) {
#pragma unroll
      for (int j = 0; j < V; ++j)
        if (live & (1u << j)) atomicAdd(&h[(key[j] >> shift) & 255u], 1u);
    }
    cluster_arrive();
    cluster_wait();  // every CTA's histogram of this pass is complete
    if (tid < 256) {
      uint32_t v[kMaxCluster];  // all remote loads in flight at once
#pragma unroll
      for (int r = 0; r < kMaxCluster; ++r) v[r] = r < CL ? *cl.map_shared_rank(&h[tid], r) : 0u;
      uint32_t s = 0;
#pragma unroll
      for (int r = 0; r < kMaxCluster; ++r) s += v[r];
      tot[tid] = s;
    }
    __syncthreads();
    if (tid < 32) threshold_bucket(tot, need, lane, &s_bucket, &s_above);
    __syncthreads();
    prefix |= s_bucket << shift;
    mask |= 255u << shift;
    need -= s_above;
#pragma unroll
    for (int j = 0; j < V; ++j)
      if ((key[j] & mask) != prefix) live &= ~(1u << j);
  }
  // prefix is the k-th largest key: take every key above it and the first `need` equal to it.
  const uint32_t thr = prefix;
  uint32_t cgt = 0, ceq = 0;
#pragma unroll
  for (int j = 0; j < V; ++j) {
    cgt += key[j] > thr;
    ceq += key[j] == thr;
  }
  uint32_t total;
  const uint32_t pre = block_scan(cgt | (ceq << 16), warp_tot, &total);  // <= 32768 each
  if (tid == 0) {
    s_cnt[0] = total & 0xffffu;
    s_cnt[1] = total >> 16;
  }
  cluster_arrive();
  cluster_wait();  // counts of every CTA visible
  uint32_t g0 = 0, e0 = 0;
  if (tid < 32) {
    if (lane < rank) {
      const uint32_t* rc = cl.map_shared_rank(s_cnt, lane);
      g0 = rc[0];
      e0 = rc[1];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      g0 += __shfl_xor_sync(0xffffffffu, g0, o);
      e0 += __shfl_xor_sync(0xffffffffu, e0, o);
    }
    if (lane == 0) {
      tot[0] = g0;
      tot[1] = e0;
    }
  }
  cluster_arrive();  // no remote reads after this point; the matching wait is at the end
  __syncthreads();
  uint32_t gb = tot[0] + (pre & 0xffffu), eb = tot[1] + (pre >> 16);
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const uint32_t u = key[j];
    if (u > thr) {
      idx[gb + min(eb, need)] = int32_t(lo + j);
      ++gb;
    } else if (u == thr) {
      if (eb < need) idx[gb + eb] = int32_t(lo + j);
      ++eb;
    }
  }
  cluster_wait();  // keep this CTA's shared memory alive until the others have read it
}

template <int V>
void launch_cluster(const TopK& p, int CL, cudaStream_t stream) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(unsigned(CL), unsigned(p.S));
  cfg.blockDim = dim3(kThreads);
  cfg.stream = stream;
  cudaLaunchAttribute at[2];
  at[0].id = cudaLaunchAttributeClusterDimension;
  at[0].val.clusterDim.x = unsigned(CL);
  at[0].val.clusterDim.y = 1;
  at[0].val.clusterDim.z = 1;
  at[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at[1].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = at;
  cfg.numAttrs = 2;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, topk_cluster_kernel<V>, p));
}

}  // namespace

void topk(const TopK& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.S > 0 && p.N > 0 && p.k > 0, "topk: bad dims");
  DSA_CUDA_REQUIRE(p.scores && p.end && p.idx, "topk: null pointer");
  DSA_CUDA_REQUIRE(p.N < (int64_t(1) << 31) && p.k < 65536, "topk: N or k too large");
  // Cluster path: CL CTAs per row (>= 8 keys per thread before adding CTAs), keys in registers.
  const int64_t CL = std::min<int64_t>(kMaxCluster, std::max<int64_t>(1, (p.N + 8 * kThreads - 1) / (8 * kThreads)));
  const int64_t per = CL * kThreads * 4, cnt = (p.N + per - 1) / per * 4;
  if (p.S <= 65535 && cnt <= 32) {
    if (cnt <= 4) launch_cluster<4>(p, int(CL), stream);
    else if (cnt <= 8) launch_cluster<8>(p, int(CL), stream);
    else if (cnt <= 16) launch_cluster<16>(p, int(CL), stream);
    else launch_cluster<32>(p, int(CL), stream);
  } else {  // very long rows (> 256K keys) or > 65535 rows: one block per row
    topk_kernel<<<unsigned(p.S), kThreads, 0, stream>>>(p);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace dsa::ops::cuda
