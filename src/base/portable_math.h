// exp / log in double built from IEEE operations only (fma, +, *, /, rint, bit moves), so the
// host and the CUDA device compute the same bits; and the log-sum-exp behind every log-prob the
// engine reports and the trainer's loss uses (the rollout/trainer log-prob equality of RL rests
// on it). Accuracy ~1 ulp; what matters is that both sides agree exactly.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define DSA_HD __host__ __device__ __forceinline__
#else
#define DSA_HD inline
#endif

namespace dsa::pm {

DSA_HD double bits_to_double(uint64_t b) {
  double d;
  memcpy(&d, &b, 8);
  return d;
}
DSA_HD uint64_t double_to_bits(double d) {
  uint64_t b;
  memcpy(&b, &d, 8);
  return b;
}
DSA_HD double fma_(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
  return __fma_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
DSA_HD double rint_(double x) {
#if defined(__CUDA_ARCH__)
  return rint(x);
#else
  return std::nearbyint(x);
#endif
}
// 2^n for n in [-1022, 1023].
DSA_HD double pow2i(int n) { return bits_to_double(uint64_t(n + 1023) << 52); }

// e^x. x <= 709 (larger: +inf); x < -745: 0; NaN propagates.
DSA_HD double exp(double x) {
  if (x != x) return x;
  if (x > 709.0) return INFINITY;
  if (x < -745.0) return 0.0;
  const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  const double n = rint_(x * 1.44269504088896338700e+00);
  const double r = fma_(-n, ln2_lo, fma_(-n, ln2_hi, x));  // |r| <= ~0.347
  // Taylor polynomial of degree 12 (remainder < 2^-57 on |r| <= 0.35).
  double p = 1.0 / 479001600.0;
  p = fma_(p, r, 1.0 / 39916800.0);
  p = fma_(p, r, 1.0 / 3628800.0);
  p = fma_(p, r, 1.0 / 362880.0);
  p = fma_(p, r, 1.0 / 40320.0);
  p = fma_(p, r, 1.0 / 5040.0);
  p = fma_(p, r, 1.0 / 720.0);
  p = fma_(p, r, 1.0 / 120.0);
  p = fma_(p, r, 1.0 / 24.0);
  p = fma_(p, r, 1.0 / 6.0);
  p = fma_(p, r, 0.5);
  p = fma_(p, r, 1.0);
  p = fma_(p, r, 1.0);
  const int k = int(n);
  if (k >= -1022) return p * pow2i(k);
  return (p * pow2i(k + 600)) * pow2i(-600);  // subnormal results: two exact-exponent steps
}

// Natural log for finite x > 0 (x <= 0: -inf / NaN).
DSA_HD double log(double x) {
  if (!(x > 0.0)) return x == 0.0 ? -INFINITY : NAN;
  if (x == INFINITY) return x;
  int e = 0;
  if (x < 2.2250738585072014e-308) {  // subnormal: scale up exactly
    x *= pow2i(600);
    e = -600;
  }
  const uint64_t b = double_to_bits(x);
  e += int((b >> 52) & 0x7ff) - 1023;
  double m = bits_to_double((b & 0x000fffffffffffffull) | 0x3ff0000000000000ull);  // [1, 2)
  if (m > 1.41421356237309504880) {
    m *= 0.5;
    ++e;
  }
  // log m = 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.1716: odd series to s^23.
  const double s = (m - 1.0) / (m + 1.0), s2 = s * s;
  double q = 1.0 / 23.0;
  q = fma_(q, s2, 1.0 / 21.0);
  q = fma_(q, s2, 1.0 / 19.0);
  q = fma_(q, s2, 1.0 / 17.0);
  q = fma_(q, s2, 1.0 / 15.0);
  q = fma_(q, s2, 1.0 / 13.0);
  q = fma_(q, s2, 1.0 / 11.0);
  q = fma_(q, s2, 1.0 / 9.0);
  q = fma_(q, s2, 1.0 / 7.0);
  q = fma_(q, s2, 1.0 / 5.0);
  q = fma_(q, s2, 1.0 / 3.0);
  q = fma_(q, s2, 1.0);
  const double lm = 2.0 * s * q;
  const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  return fma_(double(e), ln2_hi, fma_(double(e), ln2_lo, lm));
}

// log Σ_i exp(z[i]): the max subtracted; the terms summed in kLanes interleaved partial sums
// (partial j takes i ≡ j mod kLanes in increasing i), then the partials in order. The CUDA
// kernel of logits_grad computes exactly this with one thread per partial.
inline constexpr int kLseLanes = 256;

}  // namespace dsa::pm
