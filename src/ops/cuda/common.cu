// Bench helpers: a plain 16-byte-vector device-to-device copy (bandwidth probe) and a hash fill.
#include "ops/cuda/common.cuh"

namespace dsa::ops::cuda {
namespace {
__global__ void copy_kernel(uint4* __restrict__ dst, const uint4* __restrict__ src, size_t n) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) dst[i] = src[i];
}
__global__ void fill_kernel(uint8_t* dst, size_t n, uint32_t seed, uint8_t mask) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    uint32_t x = uint32_t(i) * 2654435761u ^ seed ^ uint32_t(i >> 32) * 40503u;
    x ^= x >> 15;
    x *= 2246822519u;
    x ^= x >> 13;
    dst[i] = uint8_t(x) & mask;
  }
}
}  // namespace

void fill_hash(void* dst, size_t bytes, uint32_t seed, uint8_t mask, cudaStream_t stream) {
  fill_kernel<<<1024, 256, 0, stream>>>(static_cast<uint8_t*>(dst), bytes, seed, mask);
  CUDA_CHECK_LAUNCH();
}

void copy_bytes(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(bytes % 16 == 0, "copy_bytes: size must be a multiple of 16");
  copy_kernel<<<sm_count() * 8, 512, 0, stream>>>(static_cast<uint4*>(dst), static_cast<const uint4*>(src),
                                           bytes / 16);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dsa::ops::cuda
