// MoE gate (spec §8.2), one thread per token: sigmoid, group-limited top-k on biased scores,
// weights from unbiased scores; ties go to the lower index as in the reference's stable sorts.
// Then the routing table (moe_route) and the combine (moe_combine) of the grouped experts: the
// routed experts run without host round trips (semantics: ops/ops.h, ops/ref/moe.cc).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "ops/cuda/common.cuh"

namespace dsa::ops::cuda {
namespace {

constexpr int kMaxE = 256, kMaxG = 64;

__global__ void moe_gate_kernel(MoeGate p) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= p.T) return;
  float s[kMaxE], b[kMaxE], gs[kMaxG];
  const int E = int(p.E), G = int(p.n_group), gsz = E / G;
  const float* lg = p.logits + t * p.E;
  for (int e = 0; e < E; ++e) {
    s[e] = 1.0f / (1.0f + expf(-lg[e]));
    b[e] = p.bias ? s[e] + p.bias[e] : s[e];
    if (p.biased) p.biased[t * p.E + e] = b[e];
  }
  if (G > 1) {
    for (int g = 0; g < G; ++g) {
      float m1 = -INFINITY, m2 = -INFINITY;
      for (int e = g * gsz; e < (g + 1) * gsz; ++e) {
        if (b[e] > m1) {
          m2 = m1;
          m1 = b[e];
        } else if (b[e] > m2) {
          m2 = b[e];
        }
      }
      gs[g] = (p.bias && gsz >= 2) ? m1 + m2 : m1;
    }
    bool keep[kMaxG];
    for (int g = 0; g < G; ++g) keep[g] = false;
    for (int r = 0; r < p.topk_group; ++r) {
      int best = -1;
      for (int g = 0; g < G; ++g)
        if (!keep[g] && (best < 0 || gs[g] > gs[best])) best = g;
      keep[best] = true;
    }
    for (int g = 0; g < G; ++g)
      if (!keep[g])
        for (int e = g * gsz; e < (g + 1) * gsz; ++e) b[e] = -INFINITY;
  }
  // Selection of topk by b (stable: lower index first among equals), marked in a bitmask.
  uint32_t chosen[kMaxE / 32] = {};
  for (int r = 0; r < p.topk; ++r) {
    int best = -1;
    for (int e = 0; e < E; ++e)
      if (!(chosen[e >> 5] >> (e & 31) & 1u) && (best < 0 || b[e] > b[best])) best = e;
    chosen[best >> 5] |= 1u << (best & 31);
  }
  float sum = 0.0f;
  for (int e = 0; e < E; ++e)
    if (chosen[e >> 5] >> (e & 31) & 1u) sum += s[e];
  int j = 0;
  for (int e = 0; e < E; ++e) {
    if (!(chosen[e >> 5] >> (e & 31) & 1u)) continue;
    float w = s[e];
    if (p.norm_topk_prob) w = w / sum;
    p.experts[t * p.topk + j] = e;
    p.weights[t * p.topk + j] = w * p.route_scale;
    ++j;
  }
}

// ---- moe_route: one block. (1) histogram of expert ids in shared memory (integer atomics: the
// counts do not depend on their order); (2) exclusive scan over experts by warp 0; (3) placement
// in chunks of blockDim choices in (token, j) order: a choice's grouped row is its expert's next
// free row + the same expert's choices in earlier warps of the chunk + its rank among equal ids
// in its own warp (__match_any_sync). Stable, hence identical to the reference's counting sort.
constexpr int kRouteMaxE = 256, kRouteMaxWarps = 32, kCombineMaxK = 32;

__global__ void __launch_bounds__(1024) moe_route_kernel(MoeRoute p) {
  __shared__ int cnt[kRouteMaxWarps * kRouteMaxE];  // [warp][expert] choices of the current chunk
  __shared__ int next[kRouteMaxE];                  // next free grouped row of each expert
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5, E = int(p.E);
  const int64_t n = p.S * p.k;
  for (int e = tid; e < E; e += blockDim.x) next[e] = 0;
  __syncthreads();
  for (int64_t i = tid; i < n; i += blockDim.x) {
    const int e = p.experts[i];
    if (e >= 0 && e < E) atomicAdd(&next[e], 1);
  }
  __syncthreads();
  if (warp == 0) {
    const int per = (E + 31) / 32, e0 = min(E, lane * per), e1 = min(E, e0 + per);
    int local = 0;
    for (int e = e0; e < e1; ++e) local += next[e];
    const int incl = detail::warp_incl_scan(local, lane);
    int run = incl - local;
    for (int e = e0; e < e1; ++e) {
      const int c = next[e];
      next[e] = run;
      p.offsets[e] = run;
      run += c;
    }
    if (lane == 31) p.offsets[E] = incl;
  }
  __syncthreads();
  for (int64_t c0 = 0; c0 < n; c0 += blockDim.x) {
    for (int j = tid; j < nw * E; j += blockDim.x) cnt[j] = 0;
    __syncthreads();
    const int64_t i = c0 + tid;
    int e = i < n ? p.experts[i] : -1;
    if (e < 0 || e >= E) e = -1;
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int wrank = __popc(peers & ((1u << lane) - 1u));
    if (e >= 0 && wrank == 0) cnt[warp * E + e] = __popc(peers);
    __syncthreads();
    if (i < n) {
      if (e < 0) {
        p.pos[i] = -1;
      } else {
        int r = next[e] + wrank;
        for (int w = 0; w < warp; ++w) r += cnt[w * E + e];
        p.rows[r] = int32_t(i / p.k);
        p.row_w[r] = p.weights[i];
        p.pos[i] = r;
      }
    }
    __syncthreads();
    for (int x = tid; x < E; x += blockDim.x) {
      int t = 0;
      for (int w = 0; w < nw; ++w) t += cnt[w * E + x];
      next[x] += t;
    }
    __syncthreads();
  }
}

// ---- moe_combine: block per token (grid-strided); the token's choices sorted by grouped row
// (= expert id) once in shared memory, then each thread owns column pairs and adds the routed
// outputs in that order with explicit fp32 multiply and add (the reference's rounding).
__global__ void moe_combine_kernel(MoeCombine p, bool pairs) {
  __shared__ int32_t order[kCombineMaxK];
  __shared__ float wt[kCombineMaxK];
  __shared__ int used;
  const int k = int(p.k);
  const uint16_t* y = reinterpret_cast<const uint16_t*>(p.y);
  for (int64_t s = blockIdx.x; s < p.S; s += gridDim.x) {
    if (threadIdx.x == 0) {
      int m = 0;
      for (int j = 0; j < k; ++j) {  // insertion sort of the valid rows (k is small)
        const int32_t r = p.pos[s * p.k + j];
        if (r < 0) continue;
        int q = m++;
        while (q > 0 && order[q - 1] > r) {
          order[q] = order[q - 1];
          --q;
        }
        order[q] = r;
      }
      for (int j = 0; j < m; ++j) wt[j] = p.w[order[j]];
      used = m;
    }
    __syncthreads();
    const int m = used;
    float* a = p.acc + s * p.H;
    if (pairs) {
      for (int64_t d = 2 * int64_t(threadIdx.x); d < p.H; d += 2 * int64_t(blockDim.x)) {
        float2 v = *reinterpret_cast<const float2*>(a + d);
        for (int j = 0; j < m; ++j) {
          const uint32_t yy = *reinterpret_cast<const uint32_t*>(y + int64_t(order[j]) * p.H + d);
          v.x = __fadd_rn(v.x, __fmul_rn(detail::bf2f(uint16_t(yy & 0xffffu)), wt[j]));
          v.y = __fadd_rn(v.y, __fmul_rn(detail::bf2f(uint16_t(yy >> 16)), wt[j]));
        }
        *reinterpret_cast<float2*>(a + d) = v;
      }
    } else {
      for (int64_t d = threadIdx.x; d < p.H; d += blockDim.x) {
        float v = a[d];
        for (int j = 0; j < m; ++j) v = __fadd_rn(v, __fmul_rn(detail::bf2f(y[int64_t(order[j]) * p.H + d]), wt[j]));
        a[d] = v;
      }
    }
    __syncthreads();  // order/wt are rewritten for the next token
  }
}

}  // namespace

void moe_gate(const MoeGate& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.T > 0 && p.E > 0 && p.n_group > 0 && p.topk_group > 0 && p.topk > 0,
                   "moe_gate: bad dims");
  DSA_CUDA_REQUIRE(p.E % p.n_group == 0 && p.topk_group <= p.n_group &&
                       p.topk <= p.topk_group * (p.E / p.n_group),
                   "moe_gate: inconsistent E / n_group / topk_group / topk");
  DSA_CUDA_REQUIRE(p.E <= kMaxE && p.n_group <= kMaxG, "moe_gate: E <= 256 and n_group <= 64 only");
  DSA_CUDA_REQUIRE(p.logits && p.experts && p.weights, "moe_gate: null pointer");
  moe_gate_kernel<<<unsigned(ceil_div(p.T, 64)), 64, 0, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

void moe_route(const MoeRoute& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.S > 0 && p.k > 0 && p.E > 0, "moe_route: bad dims");
  DSA_CUDA_REQUIRE(p.E <= kRouteMaxE, "moe_route: E <= 256 only");
  DSA_CUDA_REQUIRE(p.S * p.k < (int64_t(1) << 31), "moe_route: S * k must fit int32");
  DSA_CUDA_REQUIRE(p.experts && p.weights && p.offsets && p.rows && p.row_w && p.pos, "moe_route: null pointer");
  // Decode has a handful of choices: a small block keeps the per-chunk shared-memory passes short.
  const int threads = p.S * p.k <= 256 ? 256 : 1024;
  moe_route_kernel<<<1, threads, 0, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

void moe_combine(const MoeCombine& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.S >= 0 && p.k > 0 && p.H > 0, "moe_combine: bad dims");
  DSA_CUDA_REQUIRE(p.k <= kCombineMaxK, "moe_combine: k <= 32 only");
  DSA_CUDA_REQUIRE(p.acc && p.y && p.pos && p.w, "moe_combine: null pointer");
  if (p.S == 0) return;
  // Column pairs (8-byte acc, 4-byte y accesses) when H and the pointers allow it.
  const bool pairs = p.H % 2 == 0 && (reinterpret_cast<uintptr_t>(p.acc) & 7) == 0 &&
                     (reinterpret_cast<uintptr_t>(p.y) & 3) == 0;
  const int threads = p.H >= 4096 ? 256 : 128;
  moe_combine_kernel<<<unsigned(std::min<int64_t>(p.S, int64_t(1) << 20)), threads, 0, stream>>>(p, pairs);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dsa::ops::cuda
