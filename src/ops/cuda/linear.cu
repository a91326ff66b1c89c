// linear_f32 (fp32 x, bf16 w, fp32 out): a GEMV kernel for up to 8 rows (decode), a tiled SIMT
// kernel otherwise; and the per-head bf16 matmul of the absorbed MLA path. fp32 accumulation.
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

// Few rows (decode: the LM head, the MoE gate): a bandwidth-bound GEMV. One warp per weight row,
// lanes stride K in 8-wide bf16 vectors; x (fp32, M rows) comes through L1 (every warp reads it).
template <int M>
__global__ void __launch_bounds__(256) linear_f32_gemv_kernel(LinearF32 p) {
  const int lane = threadIdx.x & 31;
  const int64_t n = int64_t(blockIdx.x) * 8 + (threadIdx.x >> 5);
  if (n >= p.N) return;
  const uint4* w = reinterpret_cast<const uint4*>(p.w + n * p.K);
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.0f;
  const int64_t kv = p.K / 8;
#pragma unroll 4
  for (int64_t i = lane; i < kv; i += 32) {
    const uint4 wv = __ldcs(w + i);  // streamed once: keep it out of L1
    float wf[8];
    const uint32_t ww[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      wf[2 * j] = __uint_as_float(ww[j] << 16);
      wf[2 * j + 1] = __uint_as_float(ww[j] & 0xffff0000u);
    }
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float4* x = reinterpret_cast<const float4*>(p.x + m * p.K) + 2 * i;
      const float4 a = __ldg(x), b = __ldg(x + 1);
      acc[m] += a.x * wf[0] + a.y * wf[1] + a.z * wf[2] + a.w * wf[3] + b.x * wf[4] + b.y * wf[5] +
                b.z * wf[6] + b.w * wf[7];
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const float v = warp_sum(acc[m]);
    if (lane == 0) p.y[m * p.N + n] = v;
  }
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
  const bool vec = p.K % 8 == 0 && (reinterpret_cast<uintptr_t>(p.w) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(p.x) & 15) == 0;
  if (vec && p.M <= 8 && !batch_invariant()) {
    const unsigned g = unsigned(ceil_div(p.N, 8));
    switch (p.M) {
      case 1: linear_f32_gemv_kernel<1><<<g, 256, 0, stream>>>(p); break;
      case 2: linear_f32_gemv_kernel<2><<<g, 256, 0, stream>>>(p); break;
      case 3: linear_f32_gemv_kernel<3><<<g, 256, 0, stream>>>(p); break;
      case 4: linear_f32_gemv_kernel<4><<<g, 256, 0, stream>>>(p); break;
      case 5: linear_f32_gemv_kernel<5><<<g, 256, 0, stream>>>(p); break;
      case 6: linear_f32_gemv_kernel<6><<<g, 256, 0, stream>>>(p); break;
      case 7: linear_f32_gemv_kernel<7><<<g, 256, 0, stream>>>(p); break;
      default: linear_f32_gemv_kernel<8><<<g, 256, 0, stream>>>(p); break;
    }
    CUDA_CHECK_LAUNCH();
    return;
  }
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
