// Helpers for the CUDA op tests: device buffers, random inputs, poisoned outputs, comparisons.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "base/numeric.h"
#include "ops/cuda/cuda_ops.h"
#include "ops/ops.h"

namespace dsa::ops::cuda::test {

template <class T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t count) : n(count) { CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(1, n) * sizeof(T))); }
  explicit DevBuf(const std::vector<T>& v) : DevBuf(v.size()) { up(v); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void up(const std::vector<T>& v) {
    CUDA_CHECK(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  // Fill with 0xff bytes: NaN in fp32 / bf16 / fp8 and -1 in int32, so unwritten outputs show.
  void poison() { CUDA_CHECK(cudaMemset(p, 0xff, std::max<size_t>(1, n) * sizeof(T))); }
  std::vector<T> down() const {
    CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> v(n);
    CUDA_CHECK(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
};

std::mt19937& rng();
std::vector<bf16> rand_bf16(size_t n, float scale = 1.0f);
std::vector<float> rand_f32(size_t n, float lo, float hi);
std::vector<fp8> rand_fp8(size_t n);  // finite e4m3 codes, |v| <= 448
inline float f(bf16 v) { return bf16_to_f32(v); }
// bf16 values equal within `ulps` units in the last place (NaN never matches).
bool bf16_close_ulps(bf16 a, bf16 b, int ulps);

// Selects the FP8 kernel family for a scope (set_fp8_wgmma; mma_sync: the exact GEMMs' tiled
// mma.sync kernel instead of f16 wgmma), back to the exact defaults after.
struct Fp8Mode {
  explicit Fp8Mode(bool wgmma, bool mma_sync = false) {
    set_fp8_wgmma(wgmma);
    set_fp8_mma_sync(mma_sync);
  }
  ~Fp8Mode() {
    set_fp8_wgmma(false);
    set_fp8_mma_sync(false);
  }
  Fp8Mode(const Fp8Mode&) = delete;
  Fp8Mode& operator=(const Fp8Mode&) = delete;
};

}  // namespace dsa::ops::cuda::test
