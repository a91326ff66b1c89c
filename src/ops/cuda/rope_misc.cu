// RoPE in place (interleaved and half-split pairs) and the Sylvester-order Hadamard rotation,
// bit-exact with the reference (same butterfly order; built with --fmad=false).
#include "ops/cuda/common.cuh"

namespace dsa::ops::cuda {
namespace {
using namespace detail;

__global__ void rope_kernel(Rope p) {
  const int64_t half = p.rope_dim / 2;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.M * p.H * half) return;
  const int64_t m = i / (p.H * half), h = (i / half) % p.H, j = i % half;
  const int64_t pos = p.pos[m];
  const float c = p.cos[pos * half + j], s = p.sin[pos * half + j];
  bf16* x = p.x + (m * p.H + h) * p.row_stride + p.off;
  const int64_t i0 = p.interleaved ? 2 * j : j, i1 = p.interleaved ? 2 * j + 1 : j + half;
  const float a = bf2f(x[i0].bits), b = bf2f(x[i1].bits);
  x[i0].bits = f2bf(a * c - b * s);
  x[i1].bits = f2bf(a * s + b * c);
}

__global__ void hadamard_kernel(Hadamard p, float scale) {
  extern __shared__ float v[];
  bf16* x = p.x + int64_t(blockIdx.x) * p.n;
  for (int64_t i = threadIdx.x; i < p.n; i += blockDim.x) v[i] = bf2f(x[i].bits);
  __syncthreads();
  for (int64_t len = 1; len < p.n; len *= 2) {
    for (int64_t q = threadIdx.x; q < p.n / 2; q += blockDim.x) {
      const int64_t j = (q / len) * 2 * len + q % len;
      const float a = v[j], b = v[j + len];
      v[j] = a + b;
      v[j + len] = a - b;
    }
    __syncthreads();
  }
  for (int64_t i = threadIdx.x; i < p.n; i += blockDim.x) x[i].bits = f2bf(v[i] * scale);
}

}  // namespace

void rope(const Rope& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.M > 0 && p.H > 0 && p.rope_dim > 0 && p.rope_dim % 2 == 0, "rope: bad dims");
  DSA_CUDA_REQUIRE(p.off >= 0 && p.off + p.rope_dim <= p.row_stride, "rope: off + rope_dim > row_stride");
  DSA_CUDA_REQUIRE(p.x && p.pos && p.cos && p.sin, "rope: null pointer");
  const int64_t n = p.M * p.H * (p.rope_dim / 2);
  rope_kernel<<<unsigned(ceil_div(n, 256)), 256, 0, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

void hadamard(const Hadamard& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.M > 0 && p.n > 0 && (p.n & (p.n - 1)) == 0 && p.n <= 8192,
                   "hadamard: n must be a power of two <= 8192");
  DSA_CUDA_REQUIRE(p.x, "hadamard: null pointer");
  const float scale = float(1.0 / std::sqrt(double(p.n)));
  const int threads = int(std::min<int64_t>(256, std::max<int64_t>(32, p.n / 2)));
  hadamard_kernel<<<unsigned(p.M), threads, size_t(p.n) * 4, stream>>>(p, scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dsa::ops::cuda
