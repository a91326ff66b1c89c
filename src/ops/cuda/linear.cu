// linear_f32 (fp32 x, bf16 w, fp32 out) and the per-head bf16 matmul of the absorbed MLA path,
// as plain SIMT kernels with fp32 accumulation.
#include "ops/cuda/common.cuh"

namespace dsa::ops::cuda {
namespace {
using namespace detail;

constexpr int T = 16;

__global__ void linear_f32_kernel(LinearF32 p) {
  __shared__ float xs[T][T + 1], wsm[T][T + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t m = int64_t(blockIdx.y) * T + ty, n = int64_t(blockIdx.x) * T + tx;
  const int64_t nw = int64_t(blockIdx.x) * T + ty;  // w row loaded by this thread
  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < p.K; k0 += T) {
    xs[ty][tx] = (m < p.M && k0 + tx < p.K) ? p.x[m * p.K + k0 + tx] : 0.0f;
    wsm[ty][tx] = (nw < p.N && k0 + tx < p.K) ? bf2f(p.w[nw * p.K + k0 + tx].bits) : 0.0f;
    __syncthreads();
#pragma unroll
    for (int k = 0; k < T; ++k) acc += xs[ty][k] * wsm[tx][k];
    __syncthreads();
  }
  if (m < p.M && n < p.N) p.y[m * p.N + n] = acc;
}

// y[s,h,n] = Σ_k x[s,h,k] W_h[k,n]: one thread per output, coalesced over n.
__global__ void head_matmul_kn_kernel(HeadMatmul p) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t h = blockIdx.y, s = blockIdx.z;
  if (n >= p.N) return;
  const bf16* x = p.x + s * p.x_s_stride + h * p.x_h_stride;
  const bf16* w = p.w + h * p.w_head_stride + n;
  float acc = 0.0f;
  for (int64_t k = 0; k < p.K; ++k) acc += bf2f(x[k].bits) * bf2f(w[k * p.w_row_stride].bits);
  p.y[(s * p.H + h) * p.N + n].bits = f2bf(acc);
}

// W_h viewed [N, K]: one warp per output, lanes over k.
__global__ void head_matmul_nk_kernel(HeadMatmul p) {
  const int64_t n = int64_t(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5);
  const int64_t h = blockIdx.y, s = blockIdx.z;
  const int lane = threadIdx.x & 31;
  if (n >= p.N) return;
  const bf16* x = p.x + s * p.x_s_stride + h * p.x_h_stride;
  const bf16* w = p.w + h * p.w_head_stride + n * p.w_row_stride;
  float acc = 0.0f;
  for (int64_t k = lane; k < p.K; k += 32) acc += bf2f(x[k].bits) * bf2f(w[k].bits);
  acc = warp_sum(acc);
  if (lane == 0) p.y[(s * p.H + h) * p.N + n].bits = f2bf(acc);
}

}  // namespace

void linear_f32(const LinearF32& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.M > 0 && p.N > 0 && p.K > 0, "linear_f32: bad dims");
  DSA_CUDA_REQUIRE(p.x && p.w && p.y, "linear_f32: null pointer");
  const dim3 grid(unsigned(ceil_div(p.N, T)), unsigned(ceil_div(p.M, T)));
  linear_f32_kernel<<<grid, dim3(T, T), 0, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

void head_matmul(const HeadMatmul& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.S > 0 && p.H > 0 && p.K > 0 && p.N > 0, "head_matmul: bad dims");
  DSA_CUDA_REQUIRE(p.x && p.w && p.y, "head_matmul: null pointer");
  DSA_CUDA_REQUIRE(p.w_row_stride >= (p.trans_w ? p.K : p.N), "head_matmul: w_row_stride too small");
  DSA_CUDA_REQUIRE(p.H <= 65535 && p.S <= 65535, "head_matmul: S or H too large");
  if (p.trans_w) {
    head_matmul_nk_kernel<<<dim3(unsigned(ceil_div(p.N, 8)), unsigned(p.H), unsigned(p.S)), 256, 0,
                            stream>>>(p);
  } else {
    head_matmul_kn_kernel<<<dim3(unsigned(ceil_div(p.N, 128)), unsigned(p.H), unsigned(p.S)), 128, 0,
                            stream>>>(p);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace dsa::ops::cuda
