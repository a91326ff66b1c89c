// Inline AVX512-BF16/VBMI helpers shared by the bf16 kernels (bf16_avx512.cc, mla_bf16.cc); every
// function using them carries DSA_BF16_TARGET and runs only when bf16_dot_available().
#pragma once
#include <immintrin.h>

#include <cstdint>

#define DSA_BF16_TARGET                                                                        \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512cd,avx512bf16,avx512vbmi," \
                        "avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt")))
#define DSA_BF16_INLINE static inline DSA_BF16_TARGET __attribute__((always_inline))

namespace dsa::ops::cpu::bf16k {

// bf16 bits of the fp8 magnitude codes 0..127 split into low and high bytes (exact: e4m3 values,
// subnormals 2^-9·m included, are bf16 normals). Code 0x7f (NaN) maps to a bf16 NaN.
struct Fp8Tables {
  alignas(64) uint8_t lo[128];
  alignas(64) uint8_t hi[128];
};
const Fp8Tables& fp8_tables();

struct Dec {
  __m512i lo0, lo1, hi0, hi1;
};
DSA_BF16_INLINE Dec LoadDec() {
  const Fp8Tables& t = fp8_tables();
  return {_mm512_load_si512(t.lo), _mm512_load_si512(t.lo + 64), _mm512_load_si512(t.hi),
          _mm512_load_si512(t.hi + 64)};
}

// 64 fp8 bytes -> 64 bf16 in two vectors, in "unpack order": o0 holds bytes 16L+0..7 and o1 bytes
// 16L+8..15 of each 128-bit lane L. Any two operands decoded alike pair up element for element.
DSA_BF16_INLINE void Dec64(const Dec& t, __m512i x, __m512i& o0, __m512i& o1) {
  const __m512i lo = _mm512_permutex2var_epi8(t.lo0, x, t.lo1);
  const __m512i hi = _mm512_or_si512(_mm512_permutex2var_epi8(t.hi0, x, t.hi1),
                                     _mm512_and_si512(x, _mm512_set1_epi8(char(0x80))));
  o0 = _mm512_unpacklo_epi8(lo, hi);
  o1 = _mm512_unpackhi_epi8(lo, hi);
}

DSA_BF16_INLINE __m512 Dp(__m512 acc, __m512i a, __m512i b) {
  return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}

// bf16 RNE rounding of every lane (values finite), as dsa::round_bf16.
DSA_BF16_INLINE __m512 RoundBf16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i r = _mm512_add_epi32(
      u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff),
                          _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1))));
  return _mm512_castsi512_ps(_mm512_and_si512(r, _mm512_set1_epi32(int(0xffff0000u))));
}

// exp(x) for x <= 0 (x = score - max), within 1 ulp of exp (checked): x = k·ln2 + r (Cody-Waite, |r| <=
// ln2/2), degree-7 Taylor/Horner polynomial, times 2^k by vscalefps (handles the underflow range).
DSA_BF16_INLINE __m512 ExpNonPos(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));  // exp below is 0 in fp32 either way
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693145752f), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.42860677e-6f), r);
  __m512 y = _mm512_set1_ps(1.0f / 5040);
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0f / 720));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0f / 120));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0f / 24));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0f / 6));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(0.5f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, k);
}

// 16 fp8 bytes -> 16 fp32 values times 2^-8 (the e4m3 bits placed in an fp16 pattern), exact.
DSA_BF16_INLINE __m512 Fp8x16Div256(const uint8_t* p) {
  const __m256i x = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m256i h = _mm256_and_si256(_mm256_slli_epi16(x, 7), _mm256_set1_epi16(int16_t(-16385)));
  return _mm512_cvtph_ps(h);
}

}  // namespace dsa::ops::cpu::bf16k
