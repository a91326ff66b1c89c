// Sparse MHA-mode prefill (spec §6.1): one block per (query, head); warps compute the selected
// keys' scores, an exact bf16 softmax, then threads over d_v accumulate p·v in selection order.
#include <cmath>

#include "ops/cuda/common.cuh"

namespace dsa::ops::cuda {
namespace {
using namespace detail;

constexpr int kThreads = 128;

__global__ void __launch_bounds__(kThreads) mha_prefill_kernel(SparseMhaPrefill p) {
  extern __shared__ float sm[];
  float* q = sm;              // [d_qk]
  float* score = sm + p.d_qk; // [K]
  __shared__ float red[kThreads / 32];
  const int64_t s = blockIdx.y, h = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int32_t* idx = p.idx + s * p.K;
  for (int64_t d = threadIdx.x; d < p.d_qk; d += kThreads) q[d] = bf2f(p.q[(s * p.H + h) * p.d_qk + d].bits);
  __syncthreads();
  for (int64_t j = warp; j < p.K; j += kThreads / 32) {
    const int32_t t = idx[j];
    float sc = -INFINITY;
    if (t >= 0 && t < p.T) {
      const bf16* k = p.k + (int64_t(t) * p.H + h) * p.d_qk;
      float dot = 0.0f;
      for (int64_t d = lane; d < p.d_qk; d += 32) dot += q[d] * bf2f(k[d].bits);
      dot = warp_sum(dot);
      sc = rbf(rbf(dot) * p.scale);
    }
    if (lane == 0) score[j] = sc;
  }
  __syncthreads();
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < p.K; j += kThreads) m = fmaxf(m, score[j]);
  m = warp_max(m);
  if (lane == 0) red[warp] = m;
  __syncthreads();
  m = fmaxf(fmaxf(red[0], red[1]), fmaxf(red[2], red[3]));
  __syncthreads();
  bf16* o = p.o + (s * p.H + h) * p.d_v;
  if (m == -INFINITY) {
    for (int64_t d = threadIdx.x; d < p.d_v; d += kThreads) o[d].bits = 0;
    return;
  }
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < p.K; j += kThreads) sum += expf(score[j] - m);
  sum = warp_sum(sum);
  if (lane == 0) red[warp] = sum;
  __syncthreads();
  sum = red[0] + red[1] + red[2] + red[3];
  for (int64_t j = threadIdx.x; j < p.K; j += kThreads) score[j] = rbf(expf(score[j] - m) / sum);
  __syncthreads();
  for (int64_t d = threadIdx.x; d < p.d_v; d += kThreads) {
    float acc = 0.0f;
    for (int64_t j = 0; j < p.K; ++j) {
      const int32_t t = idx[j];
      if (t < 0 || t >= p.T) continue;
      acc += score[j] * bf2f(p.v[(int64_t(t) * p.H + h) * p.d_v + d].bits);
    }
    o[d].bits = f2bf(acc);
  }
}

}  // namespace

void sparse_mha_prefill(const SparseMhaPrefill& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.S > 0 && p.T > 0 && p.H > 0 && p.d_qk > 0 && p.d_v > 0 && p.K > 0,
                   "sparse_mha_prefill: bad dims");
  DSA_CUDA_REQUIRE(p.q && p.k && p.v && p.idx && p.o, "sparse_mha_prefill: null pointer");
  const size_t smem = size_t(p.d_qk + p.K) * 4;
  DSA_CUDA_REQUIRE(smem <= 48 * 1024 && p.S <= 65535, "sparse_mha_prefill: d_qk + K too large");
  mha_prefill_kernel<<<dim3(unsigned(p.H), unsigned(p.S)), kThreads, smem, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dsa::ops::cuda
