// Indexer training ops on the GPU (ops/grad.h): the KL against the attention's distribution (one
// block per query row; double block sums in a fixed order) and the backward of indexer_logits
// (one warp per (query, head) for the head weights and queries, one warp per key row for the
// keys: every output has one owner, so the sums are deterministic). Plain kernels: the DSA
// conversion's correctness first, speed later.
#include <cfloat>

#include "ops/cuda/common.cuh"

namespace dsa::ops::cuda {
namespace {
using namespace detail;

constexpr int kT = 256;

__device__ double block_max_d(double v, double* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  double r = -DBL_MAX;
  for (int i = 0; i < nw; ++i) r = fmax(r, red[i]);
  __syncthreads();
  return r;
}

// Dynamic shared memory: ceil(N/32) words of the row's top-k bitmap (when sel is set).
__global__ void indexer_kl_kernel(IndexerKl p) {
  extern __shared__ uint32_t bits[];
  __shared__ double red[32];
  const int64_t t = blockIdx.x;
  const int32_t* idx = p.idx + t * p.K;
  const float* z = p.scores + t * p.N;
  const int64_t words = (p.N + 31) / 32;
  if (p.sel) {
    for (int64_t i = threadIdx.x; i < words; i += blockDim.x) bits[i] = 0u;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < p.ksel; i += blockDim.x) {
      const int32_t s = p.sel[t * p.ksel + i];
      if (s >= 0 && s < p.N) atomicOr(&bits[s / 32], 1u << (s % 32));
    }
    __syncthreads();
  }
  if (p.d_scores)
    for (int64_t s = threadIdx.x; s < p.N; s += blockDim.x) p.d_scores[t * p.N + s] = 0.0f;
  auto psum = [&](int64_t j) {
    double v = 0.0;
    for (int64_t h = 0; h < p.H; ++h) v += p.P[(t * p.H + h) * p.K + j];
    return v;
  };
  double tot = 0.0, mx = -DBL_MAX;
  for (int64_t j = threadIdx.x; j < p.K; j += blockDim.x)
    if (idx[j] >= 0) {
      tot += psum(j);
      mx = fmax(mx, double(z[idx[j]]));
    }
  tot = block_sum_d(tot, red);
  mx = block_max_d(mx, red);
  double se = 0.0;
  for (int64_t j = threadIdx.x; j < p.K; j += blockDim.x)
    if (idx[j] >= 0) se += exp(double(z[idx[j]]) - mx);
  se = block_sum_d(se, red);
  __syncthreads();  // the zero fill of d_scores before the writes below
  double loss = 0.0, rec = 0.0;
  if (tot > 0.0 && mx > -DBL_MAX) {
    const double lse = mx + log(se);
    for (int64_t j = threadIdx.x; j < p.K; j += blockDim.x) {
      const int32_t s = idx[j];
      if (s < 0) continue;
      const double pj = psum(j) / tot, lq = double(z[s]) - lse;
      if (pj > 0.0) loss += pj * (log(pj) - lq);
      if (p.sel && ((bits[s / 32] >> (s % 32)) & 1u)) rec += pj;
      if (p.d_scores) p.d_scores[t * p.N + s] = float(double(p.coef) * (exp(lq) - pj));
    }
  }
  loss = block_sum_d(loss, red);
  rec = block_sum_d(rec, red);
  if (threadIdx.x == 0) {
    p.loss[t] = loss;
    if (p.recall) p.recall[t] = rec;
  }
}

// One warp per (t, h): dw[t,h] and dq[t,h,:] over the query's visible keys. Lane l holds dims
// l, l+32, ... (D <= 256).
__global__ void indexer_bwd_q_kernel(IndexerLogitsBwd p, double c) {
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (warp >= p.S * p.H) return;
  const int64_t t = warp / p.H, h = warp % p.H, D = p.D;
  constexpr int kMaxPer = 8;
  float q[kMaxPer], dq[kMaxPer];
  const float qs = p.qs[t * p.H + h];
  for (int i = 0; i < kMaxPer; ++i) {
    const int64_t d = lane + 32 * i;
    q[i] = d < D ? fp82f(p.q8[(t * p.H + h) * D + d]) * qs : 0.0f;
    dq[i] = 0.0f;
  }
  double dw = 0.0;
  const double wc = c * double(p.w[t * p.H + h]);
  for (int64_t s = 0; s < p.end[t]; ++s) {
    const float g = p.dI[t * p.N + s];
    if (g == 0.0f) continue;
    const int64_t r = p.key_base[t] + s;
    const float ks = p.ks[r];
    float k[kMaxPer];
    double a = 0.0;
    for (int i = 0; i < kMaxPer; ++i) {
      const int64_t d = lane + 32 * i;
      k[i] = d < D ? fp82f(p.k8[r * D + d]) * ks : 0.0f;
      a += double(q[i]) * k[i];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
    if (a <= 0.0) continue;
    dw += c * double(g) * a;
    const float gw = float(wc * double(g));
    for (int i = 0; i < kMaxPer; ++i) dq[i] += gw * k[i];
  }
  for (int i = 0; i < kMaxPer; ++i) {
    const int64_t d = lane + 32 * i;
    if (d < D) p.dq[(t * p.H + h) * D + d] = dq[i];
  }
  if (lane == 0) p.dw[t * p.H + h] = float(dw);
}

// One warp per key row r: dk[r,:] += Σ over the queries t that see r (in increasing t, then h).
__global__ void indexer_bwd_k_kernel(IndexerLogitsBwd p, double c) {
  const int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (r >= p.NK) return;
  const int64_t D = p.D;
  constexpr int kMaxPer = 8;
  float k[kMaxPer], dk[kMaxPer];
  const float ks = p.ks[r];
  for (int i = 0; i < kMaxPer; ++i) {
    const int64_t d = lane + 32 * i;
    k[i] = d < D ? fp82f(p.k8[r * D + d]) * ks : 0.0f;
    dk[i] = 0.0f;
  }
  for (int64_t t = 0; t < p.S; ++t) {
    const int64_t s = r - p.key_base[t];
    if (s < 0 || s >= p.end[t]) continue;
    const float g = p.dI[t * p.N + s];
    if (g == 0.0f) continue;
    for (int64_t h = 0; h < p.H; ++h) {
      const float qs = p.qs[t * p.H + h];
      float q[kMaxPer];
      double a = 0.0;
      for (int i = 0; i < kMaxPer; ++i) {
        const int64_t d = lane + 32 * i;
        q[i] = d < D ? fp82f(p.q8[(t * p.H + h) * D + d]) * qs : 0.0f;
        a += double(q[i]) * k[i];
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
      if (a <= 0.0) continue;
      const float gw = float(c * double(g) * double(p.w[t * p.H + h]));
      for (int i = 0; i < kMaxPer; ++i) dk[i] += gw * q[i];
    }
  }
  for (int i = 0; i < kMaxPer; ++i) {
    const int64_t d = lane + 32 * i;
    if (d < D) p.dk[r * D + d] += dk[i];
  }
}

}  // namespace

void indexer_kl(const IndexerKl& p, cudaStream_t s) {
  DSA_CUDA_REQUIRE(p.H > 0 && p.K >= 0 && p.N >= 0 && (!p.sel || p.ksel > 0), "indexer_kl: bad shape");
  DSA_CUDA_REQUIRE(p.N <= 48 * 1024 * 8, "indexer_kl: N above the shared-memory bitmap");
  if (p.S == 0) return;
  const size_t smem = p.sel ? size_t((p.N + 31) / 32) * 4 : 0;
  indexer_kl_kernel<<<int(p.S), kT, smem, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

void indexer_logits_bwd(const IndexerLogitsBwd& p, cudaStream_t s) {
  DSA_CUDA_REQUIRE(p.D > 0 && p.D <= 256, "indexer_logits_bwd: D must be in 1..256");
  const double c = 1.0 / sqrt(double(p.H)) / sqrt(double(p.D));
  if (p.S * p.H > 0) {
    const int64_t threads = p.S * p.H * 32;
    indexer_bwd_q_kernel<<<int((threads + kT - 1) / kT), kT, 0, s>>>(p, c);
    CUDA_CHECK_LAUNCH();
  }
  if (p.NK > 0) {
    const int64_t threads = p.NK * 32;
    indexer_bwd_k_kernel<<<int((threads + kT - 1) / kT), kT, 0, s>>>(p, c);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace dsa::ops::cuda
