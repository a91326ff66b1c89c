// act_quant, RMSNorm (fused residual), LayerNorm and the SwiGLU combine. Built with --fmad=false:
// every product and sum is rounded as in the reference; only reduction order differs.
#include <cmath>

#include "ops/cuda/common.cuh"

namespace dsa::ops::cuda {
namespace {
using namespace detail;

// One warp per (row, 128-column block).
__global__ void act_quant_kernel(ActQuant p) {
  const int64_t nb = cdiv(p.K, kBlock);
  const int64_t wid = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (wid >= p.M * nb) return;
  const int64_t m = wid / nb, b = wid % nb, k0 = b * kBlock;
  float v[4], amax = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t k = k0 + lane + 32 * i;
    v[i] = k < p.K ? bf2f(p.x[m * p.K + k].bits) : 0.0f;
    amax = fmaxf(amax, fabsf(v[i]));
  }
  amax = fmaxf(warp_max(amax), 1e-4f);
  const float t = amax * (1.0f / 448.0f);
  const uint32_t bits = __float_as_uint(t);
  const int e = int((bits >> 23) & 0xffu) - 127 + ((bits & 0x7fffffu) != 0 ? 1 : 0);
  const float s = __uint_as_float(uint32_t(e + 127) << 23);
  if (lane == 0) p.s[m * nb + b] = s;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t k = k0 + lane + 32 * i;
    if (k < p.K) p.q[m * p.K + k] = f2fp8(fminf(fmaxf(v[i] / s, -448.0f), 448.0f));
  }
}

__device__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float r = 0.0f;
  for (int i = 0; i < nw; ++i) r += red[i];
  return r;
}

__global__ void rms_norm_kernel(RmsNorm p) {
  extern __shared__ float r[];
  __shared__ float red[32];
  const int64_t m = blockIdx.x;
  const bf16* x = p.x + m * p.D;
  float ss = 0.0f;
  for (int64_t d = threadIdx.x; d < p.D; d += blockDim.x) {
    float v = bf2f(x[d].bits);
    if (p.residual) {
      v = v + bf2f(p.residual[m * p.D + d].bits);
      p.residual[m * p.D + d].bits = f2bf(v);
    }
    r[d] = v;
    ss += v * v;
  }
  ss = block_sum(ss, red);
  const float ms = ss / float(p.D);
  const float inv = 1.0f / sqrtf(ms + p.eps);
  for (int64_t d = threadIdx.x; d < p.D; d += blockDim.x)
    p.y[m * p.D + d].bits = f2bf(p.w[d] * (r[d] * inv));
}

__global__ void layer_norm_kernel(LayerNorm p) {
  extern __shared__ float r[];
  __shared__ float red[32];
  const int64_t m = blockIdx.x;
  float sum = 0.0f;
  for (int64_t d = threadIdx.x; d < p.D; d += blockDim.x) {
    r[d] = bf2f(p.x[m * p.D + d].bits);
    sum += r[d];
  }
  const float mean = block_sum(sum, red) / float(p.D);
  float var = 0.0f;
  for (int64_t d = threadIdx.x; d < p.D; d += blockDim.x) var += (r[d] - mean) * (r[d] - mean);
  var = block_sum(var, red) / float(p.D);
  const float inv = 1.0f / sqrtf(var + p.eps);
  for (int64_t d = threadIdx.x; d < p.D; d += blockDim.x)
    p.y[m * p.D + d].bits = f2bf(((r[d] - mean) * inv) * p.w[d] + p.b[d]);
}

__global__ void silu_mul_kernel(SiluMul p) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.M * p.N) return;
  const float g = bf2f(p.g[i].bits);
  const float silu = g / (1.0f + expf(-g));
  p.h[i].bits = f2bf(silu * bf2f(p.u[i].bits));
}

}  // namespace

void act_quant(const ActQuant& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.M > 0 && p.K > 0, "act_quant: bad dims");
  DSA_CUDA_REQUIRE(p.x && p.q && p.s, "act_quant: null pointer");
  const int64_t warps = p.M * ceil_div(p.K, kBlock);
  act_quant_kernel<<<unsigned(ceil_div(warps, 8)), 256, 0, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

void rms_norm(const RmsNorm& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.M > 0 && p.D > 0 && p.D <= 12288, "rms_norm: bad dims (D <= 12288)");
  DSA_CUDA_REQUIRE(p.x && p.w && p.y, "rms_norm: null pointer");
  rms_norm_kernel<<<unsigned(p.M), 256, size_t(p.D) * 4, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

void layer_norm(const LayerNorm& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.M > 0 && p.D > 0 && p.D <= 12288, "layer_norm: bad dims (D <= 12288)");
  DSA_CUDA_REQUIRE(p.x && p.w && p.b && p.y, "layer_norm: null pointer");
  layer_norm_kernel<<<unsigned(p.M), 256, size_t(p.D) * 4, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

void silu_mul(const SiluMul& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.M > 0 && p.N > 0, "silu_mul: bad dims");
  DSA_CUDA_REQUIRE(p.g && p.u && p.h, "silu_mul: null pointer");
  silu_mul_kernel<<<unsigned(ceil_div(p.M * p.N, 256)), 256, 0, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dsa::ops::cuda
