// FP8 e4m3fn encoding (round-to-nearest-even, saturating) and the decode table.
#include "base/numeric.h"

#include <array>

#include "base/portable_math.h"

namespace dsa {

fp8 f32_to_fp8(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint8_t sign = uint8_t((u >> 24) & 0x80u);
  if (std::isnan(f)) return uint8_t(sign | 0x7f);
  float a = std::fabs(f);
  if (a >= 448.0f) return uint8_t(sign | 0x7e);  // saturate (also +-inf)
  // Smallest normal is 2^-6. Below it the grid is uniform with step 2^-9.
  if (a < 0.015625f) {
    // Round a / 2^-9 to nearest even integer in [0, 8]; 8 becomes the smallest normal.
    const float q = a * 512.0f;  // exact (power-of-two scaling)
    float r = std::nearbyint(q);  // default rounding mode is to-nearest-even
    const int m = int(r);
    if (m >= 8) return uint8_t(sign | 0x08);
    return uint8_t(sign | m);
  }
  // Normal: keep 3 mantissa bits with RNE on the fp32 bit pattern.
  uint32_t b = std::bit_cast<uint32_t>(a);
  const uint32_t lsb = (b >> 20) & 1u;
  b += 0x7ffffu + lsb;
  b &= 0xfff00000u;
  const int exp = int(b >> 23) - 127;  // may have rounded up to the next binade
  const uint32_t man = (b >> 20) & 0x7u;
  if (exp > 8 || (exp == 8 && man == 7)) return uint8_t(sign | 0x7e);  // > 448 after rounding
  return uint8_t(sign | uint32_t((exp + 7) << 3) | man);
}

const std::array<float, 256> kFp8Table = [] {
  std::array<float, 256> t{};
  for (int i = 0; i < 256; ++i) t[i] = fp8_to_f32(uint8_t(i));
  return t;
}();

double log_sum_exp(const float* z, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::fmax(mx, z[i]);
  if (mx == -INFINITY) return -INFINITY;
  double part[pm::kLseLanes];
  for (int j = 0; j < pm::kLseLanes; ++j) {
    double s = 0.0;
    for (int64_t i = j; i < n; i += pm::kLseLanes) s += pm::exp(double(z[i]) - double(mx));
    part[j] = s;
  }
  double sum = 0.0;
  for (int j = 0; j < pm::kLseLanes; ++j) sum += part[j];
  return double(mx) + pm::log(sum);
}

double log_sum_exp_subset(const float* z, const int32_t* ids, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::fmax(mx, z[ids[i]]);
  if (mx == -INFINITY) return -INFINITY;
  // Lane j of log_sum_exp sums the entries i = j mod kLseLanes in increasing i; the -inf entries
  // it would add are exact zeros, so visiting only the ids (ascending) gives the same partials.
  double part[pm::kLseLanes] = {};
  for (int64_t i = 0; i < n; ++i) part[ids[i] % pm::kLseLanes] += pm::exp(double(z[ids[i]]) - double(mx));
  double sum = 0.0;
  for (int j = 0; j < pm::kLseLanes; ++j) sum += part[j];
  return double(mx) + pm::log(sum);
}

}  // namespace dsa
