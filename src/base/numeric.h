// Number formats of DeepSeek-V3.2: bf16, FP8 e4m3fn, ue8m0 power-of-two scales (spec §3).
#pragma once
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace dsa {

// ---- bf16: upper 16 bits of an IEEE fp32, round-to-nearest-even on conversion.
struct bf16 {
  uint16_t bits = 0;
};

inline float bf16_to_f32(bf16 v) { return std::bit_cast<float>(uint32_t(v.bits) << 16); }

inline bf16 f32_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x40)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{uint16_t(u >> 16)};
}

// fp32 -> bf16 -> fp32: the rounding point "bf16 out" of the spec.
inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

// ---- FP8 e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no inf; 0x7f/0xff are NaN;
// max finite 448, min subnormal 2^-9.
using fp8 = uint8_t;

inline float fp8_to_f32(fp8 v) {
  const uint32_t sign = (v & 0x80u) << 24;
  const uint32_t exp = (v >> 3) & 0xfu;
  const uint32_t man = v & 0x7u;
  if (exp == 0xf && man == 0x7) return std::bit_cast<float>(sign | 0x7fc00000u);
  float mag;
  if (exp == 0) {
    mag = std::ldexp(float(man), -9);  // subnormal: man * 2^-9
  } else {
    mag = std::bit_cast<float>(((exp + 120u) << 23) | (man << 20));
  }
  return sign ? -mag : mag;
}

// Round-to-nearest-even, saturating to ±448; NaN maps to NaN (0x7f / 0xff).
fp8 f32_to_fp8(float f);

// Table of all 256 decoded values, for hot loops.
extern const std::array<float, 256> kFp8Table;

// ---- ue8m0: a scale that is a power of two, 2^e. Spec §3.1 step 2: the smallest power of
// two >= amax * fp32(1/448), computed from the bits of the fp32 product.
inline float ue8m0_scale_for_amax(float amax) {
  amax = std::fmax(amax, 1e-4f);
  const float t = amax * (1.0f / 448.0f);
  const uint32_t bits = std::bit_cast<uint32_t>(t);
  const int e = int((bits >> 23) & 0xffu) - 127 + ((bits & 0x7fffffu) != 0 ? 1 : 0);
  return std::bit_cast<float>(uint32_t(e + 127) << 23);
}

// log Σ_i exp(z[i]) in double (base/portable_math.h: max subtracted, portable exp / log, a fixed
// summation order the CUDA backend reproduces bit for bit): the log-softmax behind every
// log-prob the engine reports and the trainer's loss, so they agree on every backend.
// -inf entries contribute 0; all -inf gives -inf.
double log_sum_exp(const float* z, int64_t n);
// log Σ_{i in ids} exp(z[i]) over n ascending, distinct ids: the same bits as log_sum_exp on the
// row with every other entry set to -inf (what the trainer computes for keep-sampling-mask).
double log_sum_exp_subset(const float* z, const int32_t* ids, int64_t n);

inline bool is_power_of_two_float(float s) {
  if (!(s > 0.0f) || !std::isfinite(s)) return false;
  return (std::bit_cast<uint32_t>(s) & 0x7fffffu) == 0;
}

}  // namespace dsa
