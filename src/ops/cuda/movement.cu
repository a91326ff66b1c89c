// CUDA kernels of the five data-movement ops (copy_rows, convert, indexer_weights, paged_rows,
// scale_add); semantics as in ops/ops.h and the host versions in ops/ref/movement.cc.
#include <algorithm>

#include "ops/cuda/common.cuh"

namespace dsa::ops::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kSegBytes = 16 * 1024;  // bytes of one row handled by one block (grid.y)

unsigned grid_for(int64_t n, int64_t per_block = kThreads) {
  return unsigned(std::min<int64_t>(std::max<int64_t>(ceil_div(n, per_block), 1), int64_t(1) << 20));
}

// Block (x, y) copies segment y of row x (grid-strided both ways); 16-byte vectors when the
// row's source, destination and length are all 16-byte aligned, bytes otherwise.
__global__ void copy_rows_kernel(CopyRows p) {
  for (int64_t i = blockIdx.x; i < p.n; i += gridDim.x) {
    const uint8_t* s = p.src + (p.src_off ? p.src_off[i] : i * p.src_stride);
    uint8_t* d = p.dst + (p.dst_off ? p.dst_off[i] : i * p.dst_stride);
    const bool vec = ((reinterpret_cast<uintptr_t>(s) | reinterpret_cast<uintptr_t>(d) | uint64_t(p.row_bytes)) & 15) == 0;
    for (int64_t seg = int64_t(blockIdx.y) * kSegBytes; seg < p.row_bytes; seg += int64_t(gridDim.y) * kSegBytes) {
      const int64_t end = std::min<int64_t>(seg + kSegBytes, p.row_bytes);
      if (vec) {
        for (int64_t b = seg + int64_t(threadIdx.x) * 16; b < end; b += int64_t(blockDim.x) * 16)
          *reinterpret_cast<uint4*>(d + b) = *reinterpret_cast<const uint4*>(s + b);
      } else {
        for (int64_t b = seg + threadIdx.x; b < end; b += blockDim.x) d[b] = s[b];
      }
    }
  }
}

__global__ void bf16_to_f32_kernel(const uint16_t* s, float* d, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    d[i] = detail::bf2f(s[i]);
}

// RNE like base/numeric.h f32_to_bf16, NaN kept quiet with its sign and upper payload.
__global__ void f32_to_bf16_kernel(const float* s, uint16_t* d, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint32_t u = __float_as_uint(s[i]);
    d[i] = (u & 0x7fffffffu) > 0x7f800000u ? uint16_t((u >> 16) | 0x40) : uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
}

__global__ void indexer_weights_kernel(IndexerWeights p) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < p.n; i += int64_t(gridDim.x) * blockDim.x)
    p.w[i] = __fmul_rn(__fmul_rn(__fmul_rn(p.w[i], p.c1), p.q_s[i]), p.c2);
}

__global__ void paged_rows_kernel(PagedRows p) {
  const int64_t n = p.S * p.K;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t s = i / p.K;
    const int32_t t = p.idx[i];
    p.phys[i] = t < 0 ? -1
                      : int32_t(int64_t(p.block_table[s * p.bt_stride + t / p.page_size]) * p.page_size +
                                t % p.page_size);
  }
}

// One block row per (row i, column chunk); rows of one call are distinct, so no atomics.
__global__ void scale_add_kernel(ScaleAdd p) {
  for (int64_t i = blockIdx.y; i < p.M; i += gridDim.y) {
    float* a = p.acc + (p.rows ? int64_t(p.rows[i]) : i) * p.H;
    const uint16_t* y = reinterpret_cast<const uint16_t*>(p.y) + i * p.H;
    const float w = p.w ? p.w[i] : 1.0f;
    for (int64_t d = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; d < p.H; d += int64_t(gridDim.x) * blockDim.x) {
      const float v = detail::bf2f(y[d]);
      a[d] = __fadd_rn(a[d], p.w ? __fmul_rn(v, w) : v);
    }
  }
}

}  // namespace

void copy_rows(const CopyRows& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.n >= 0 && p.row_bytes >= 0, "copy_rows: negative n or row_bytes");
  if (p.n == 0 || p.row_bytes == 0) return;
  if (!p.src_off && !p.dst_off && p.src_stride >= p.row_bytes && p.dst_stride >= p.row_bytes) {
    // Plain strided slice: the copy engine handles it.
    CUDA_CHECK(cudaMemcpy2DAsync(p.dst, size_t(p.dst_stride), p.src, size_t(p.src_stride), size_t(p.row_bytes),
                                 size_t(p.n), cudaMemcpyDeviceToDevice, stream));
    return;
  }
  const dim3 grid(unsigned(std::min<int64_t>(p.n, int64_t(1) << 20)),
                  unsigned(std::min<int64_t>(ceil_div(p.row_bytes, kSegBytes), 1024)));
  const int threads = p.row_bytes >= 2048 ? 256 : 64;
  copy_rows_kernel<<<grid, threads, 0, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

void convert(const Convert& p, cudaStream_t stream) {
  if (p.n <= 0) return;
  if (p.to_f32)
    bf16_to_f32_kernel<<<grid_for(p.n), kThreads, 0, stream>>>(static_cast<const uint16_t*>(p.src),
                                                               static_cast<float*>(p.dst), p.n);
  else
    f32_to_bf16_kernel<<<grid_for(p.n), kThreads, 0, stream>>>(static_cast<const float*>(p.src),
                                                               static_cast<uint16_t*>(p.dst), p.n);
  CUDA_CHECK_LAUNCH();
}

void indexer_weights(const IndexerWeights& p, cudaStream_t stream) {
  if (p.n <= 0) return;
  indexer_weights_kernel<<<grid_for(p.n), kThreads, 0, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

void paged_rows(const PagedRows& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.page_size > 0, "paged_rows: page_size must be positive");
  if (p.S <= 0 || p.K <= 0) return;
  paged_rows_kernel<<<grid_for(p.S * p.K), kThreads, 0, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

void scale_add(const ScaleAdd& p, cudaStream_t stream) {
  if (p.M <= 0 || p.H <= 0) return;
  const dim3 grid(grid_for(p.H), unsigned(std::min<int64_t>(p.M, 65535)));
  scale_add_kernel<<<grid, kThreads, 0, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dsa::ops::cuda
