// Host helpers of the CUDA backend: error reporting through dsa::Error and the shared workspace.
#include <mutex>

#include "base/error.h"
#include "ops/cuda/cuda_ops.h"

namespace dsa::ops::cuda {

void cuda_fail(cudaError_t e, const char* expr, const char* file, int line) {
  throw_error(file, line, fmt::format("CUDA error {} ({}) in {}", int(e), cudaGetErrorString(e), expr));
}

void arg_fail(const char* msg, const char* file, int line) { throw_error(file, line, msg); }

int sm_count() {
  static const int n = [] {
    int dev = 0, v = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev));
    return v;
  }();
  return n;
}

void* workspace(size_t bytes, cudaStream_t stream) {
  static std::mutex mu;
  static void* buf = nullptr;
  static size_t cap = 0;
  std::lock_guard<std::mutex> lock(mu);
  if (bytes > cap) {
    if (buf) {
      CUDA_CHECK(cudaStreamSynchronize(stream));
      CUDA_CHECK(cudaFree(buf));
      buf = nullptr;
    }
    cap = bytes + bytes / 4;
    CUDA_CHECK(cudaMalloc(&buf, cap));
  }
  return buf;
}

}  // namespace dsa::ops::cuda
