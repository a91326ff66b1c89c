// Per-target Highway helpers shared by the CPU kernels (fp8/bf16 loads, bf16 RNE stores).
// Included once per target by files that use hwy/foreach_target.h (the usual -inl.h toggle).
#if defined(DSA_OPS_CPU_SIMD_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef DSA_OPS_CPU_SIMD_INL_H_
#undef DSA_OPS_CPU_SIMD_INL_H_
#else
#define DSA_OPS_CPU_SIMD_INL_H_
#endif

#include <cstdint>

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace dsa::ops::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Lanes(d) FP8 e4m3 bytes -> fp32 values times 2^-8 (exact): the e4m3 bits placed in an fp16
// pattern (sign<<15 | exp,man<<7) are the value times 2^-8 for normals and subnormals alike, and
// fp16 -> fp32 is exact. Callers fold the 2^8 into a per-block power-of-two factor. The NaN
// codes 0x7f/0xff decode to ±480 (never produced by act_quant or the weights).
template <class DF>
HWY_INLINE hn::Vec<DF> LoadFp8Div256(DF df, const uint8_t* p) {
  // Sign-extend to 16 bits and shift by 7: bits 6..0 land in 13..7 and a copy of the sign in
  // bit 15; clearing bit 14 (the other sign copy) leaves sign | 0 | exp4 | man3 | 0000000.
  const hn::Rebind<int8_t, DF> d8;
  const hn::Rebind<int16_t, DF> d16;
  const hn::Rebind<hwy::float16_t, DF> dh;
  const auto x = hn::PromoteTo(d16, hn::LoadU(d8, reinterpret_cast<const int8_t*>(p)));
  const auto h = hn::And(hn::ShiftLeft<7>(x), hn::Set(d16, int16_t(-16385)));  // 0xbfff
  return hn::PromoteTo(df, hn::BitCast(dh, h));
}

// Lanes(d) bf16 (raw uint16 bits) -> fp32, exact.
template <class DF>
HWY_INLINE hn::Vec<DF> LoadBf16(DF df, const uint16_t* p) {
  const hn::Rebind<uint16_t, DF> d16;
  const hn::RebindToUnsigned<DF> du;
  return hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(d16, p))));
}

// fp32 -> bf16 bits with the exact rounding of dsa::f32_to_bf16 (RNE, NaN -> quiet NaN).
template <class DF>
HWY_INLINE void StoreBf16(DF df, hn::Vec<DF> v, uint16_t* p) {
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<uint16_t, DF> d16;
  const auto u = hn::BitCast(du, v);
  const auto rounded =
      hn::Add(u, hn::Add(hn::Set(du, 0x7fffu), hn::And(hn::ShiftRight<16>(u), hn::Set(du, 1u))));
  const auto nan = hn::Or(hn::ShiftRight<16>(u), hn::Set(du, 0x40u));
  const auto mag = hn::BitCast(di, hn::And(u, hn::Set(du, 0x7fffffffu)));
  const auto is_nan = hn::RebindMask(du, hn::Gt(mag, hn::Set(di, 0x7f800000)));
  const auto r = hn::IfThenElse(is_nan, nan, hn::ShiftRight<16>(rounded));
  hn::StoreU(hn::DemoteTo(d16, hn::BitCast(di, r)), d16, p);
}

// round_bf16 on every lane (fp32 -> bf16 RNE -> fp32), finite inputs.
template <class DF>
HWY_INLINE hn::Vec<DF> RoundBf16(DF df, hn::Vec<DF> v) {
  const hn::RebindToUnsigned<DF> du;
  const auto u = hn::BitCast(du, v);
  const auto r =
      hn::Add(u, hn::Add(hn::Set(du, 0x7fffu), hn::And(hn::ShiftRight<16>(u), hn::Set(du, 1u))));
  return hn::BitCast(df, hn::And(r, hn::Set(du, 0xffff0000u)));
}

// MT rows x 2 vectors of columns: out[i][c] = sum over d in [0, len) of a[i*lda + d] * B[d*ldb + c]
// in increasing d (FMA). B is aligned, ldb a multiple of the lane count.
template <int MT, class DF>
HWY_INLINE void RowsTimesTile(DF df, const float* HWY_RESTRICT a, int64_t lda, int64_t len,
                              const float* HWY_RESTRICT B, size_t ldb, hn::Vec<DF> (*out)[2]) {
  const size_t L = hn::Lanes(df);
  hn::Vec<DF> acc[MT][2];
  for (int i = 0; i < MT; ++i) acc[i][0] = acc[i][1] = hn::Zero(df);
  for (int64_t d = 0; d < len; ++d) {
    const auto b0 = hn::Load(df, B + size_t(d) * ldb), b1 = hn::Load(df, B + size_t(d) * ldb + L);
    for (int i = 0; i < MT; ++i) {
      const auto av = hn::Set(df, a[i * lda + d]);
      acc[i][0] = hn::MulAdd(av, b0, acc[i][0]);
      acc[i][1] = hn::MulAdd(av, b1, acc[i][1]);
    }
  }
  for (int i = 0; i < MT; ++i) {
    out[i][0] = acc[i][0];
    out[i][1] = acc[i][1];
  }
}

template <class DF>
HWY_INLINE float ReduceSumF(DF df, hn::Vec<DF> v) {
  return hn::GetLane(hn::SumOfLanes(df, v));
}

}  // namespace dsa::ops::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // include guard toggle
