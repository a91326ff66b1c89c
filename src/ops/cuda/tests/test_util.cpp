// Implementation of the CUDA test helpers (random inputs and ulp comparison).
#include "ops/cuda/tests/test_util.h"

namespace dsa::ops::cuda::test {

std::mt19937& rng() {
  static std::mt19937 g(12345);
  return g;
}

std::vector<bf16> rand_bf16(size_t n, float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<bf16> v(n);
  for (auto& x : v) x = f32_to_bf16(d(rng()));
  return v;
}

std::vector<float> rand_f32(size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng());
  return v;
}

std::vector<fp8> rand_fp8(size_t n) {
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<fp8> v(n);
  for (auto& x : v) x = f32_to_fp8(d(rng()));
  return v;
}

bool bf16_close_ulps(bf16 a, bf16 b, int ulps) {
  const float fa = bf16_to_f32(a), fb = bf16_to_f32(b);
  if (std::isnan(fa) || std::isnan(fb)) return false;
  if (fa == fb) return true;
  auto ord = [](uint16_t u) { return (u & 0x8000) ? -int(u & 0x7fff) : int(u); };
  return std::abs(ord(a.bits) - ord(b.bits)) <= ulps;
}

}  // namespace dsa::ops::cuda::test
