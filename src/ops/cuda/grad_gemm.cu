// The trainer's GEMM on the GPU (ops/grad.h Gemm) through cuBLAS: bf16 x bf16 with fp32
// accumulation on the tensor cores, fp32 x fp32 in fp32 (no TF32), a mixed pair by widening the
// bf16 operand to fp32 first (exact), batched and strided; row-major via the transposed problem.
// cuBLAS results are bit-reproducible run to run on the same GPU model.
#include <cublas_v2.h>

#include <mutex>

#include "ops/cuda/common.cuh"

namespace dsa::ops::cuda {
namespace {

#define CUBLAS_CHECK(expr)                                                                     \
  do {                                                                                         \
    const cublasStatus_t st_ = (expr);                                                         \
    if (st_ != CUBLAS_STATUS_SUCCESS) ::dsa::ops::cuda::arg_fail("cuBLAS call failed: " #expr, __FILE__, __LINE__); \
  } while (0)

cublasHandle_t handle(cudaStream_t s) {
  static std::once_flag once;
  static cublasHandle_t h = nullptr;
  std::call_once(once, [] {
    CUBLAS_CHECK(cublasCreate(&h));
    CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));  // fp32 inputs stay fp32 (no TF32)
  });
  CUBLAS_CHECK(cublasSetStream(h, s));
  return h;
}

__global__ void widen_kernel(const uint16_t* src, float* dst, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = detail::bf2f(src[i]);
}

// Elements an operand spans (its batch strides and leading dimension included).
int64_t span(int64_t rows, int64_t cols, int64_t ld, int64_t stride, int64_t batch) {
  return (batch - 1) * stride + (rows - 1) * ld + cols;
}

}  // namespace

void gemm(const Gemm& p, cudaStream_t s) {
  DSA_CUDA_REQUIRE(p.M >= 0 && p.N >= 0 && p.K >= 0 && p.batch >= 1 && p.ldc >= p.N, "gemm: bad shape");
  if (p.M == 0 || p.N == 0) return;
  if (p.K == 0) {
    if (!p.accumulate)
      for (int64_t b = 0; b < p.batch; ++b)
        CUDA_CHECK(cudaMemset2DAsync(p.c + b * p.stride_c, size_t(p.ldc) * 4, 0, size_t(p.N) * 4, size_t(p.M), s));
    return;
  }
  const void* a = p.a;
  const void* b = p.b;
  cudaDataType ta = p.ta == GemmType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
  cudaDataType tb = p.tb == GemmType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
  if (ta != tb) {  // widen the bf16 one
    const bool wa = ta == CUDA_R_16BF;
    const int64_t n = wa ? span(p.trans_a ? p.K : p.M, p.trans_a ? p.M : p.K, p.lda, p.stride_a, p.batch)
                         : span(p.trans_b ? p.N : p.K, p.trans_b ? p.K : p.N, p.ldb, p.stride_b, p.batch);
    float* w = static_cast<float*>(workspace(size_t(n) * 4, s));
    widen_kernel<<<detail::grid_1d(n, 256), 256, 0, s>>>(static_cast<const uint16_t*>(wa ? p.a : p.b), w, n);
    CUDA_CHECK_LAUNCH();
    if (wa) a = w, ta = CUDA_R_32F;
    else b = w, tb = CUDA_R_32F;
  }
  const float alpha = 1.0f, beta = p.accumulate ? 1.0f : 0.0f;
  // Row-major C[M,N] = op(A) op(B)  <=>  column-major C^T[N,M] = op(B)^T op(A)^T.
  CUBLAS_CHECK(cublasGemmStridedBatchedEx(handle(s), p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                          p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, int(p.N), int(p.M), int(p.K), &alpha, b,
                                          tb, int(p.ldb), p.stride_b, a, ta, int(p.lda), p.stride_a, &beta, p.c,
                                          CUDA_R_32F, int(p.ldc), p.stride_c, int(p.batch), CUBLAS_COMPUTE_32F,
                                          CUBLAS_GEMM_DEFAULT));
}

}  // namespace dsa::ops::cuda
