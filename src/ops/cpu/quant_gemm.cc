// CPU act_quant (bit-exact), FP8 block-scaled GEMM with on-the-fly dequantisation (row-independent:
// one arithmetic per output for every M) and the fp32 linear (spec §3.1, §3.2). Highway SIMD,
// runtime dispatch, parallel over output columns.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS HWY_SSSE3  // SSE4/AVX2/AVX-512 + EMU128 fallback are enough
#endif
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/cpu/quant_gemm.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/cpu/simd-inl.h"

#include "base/error.h"
#include "base/thread_pool.h"
#include "hwy/aligned_allocator.h"
#include "ops/cpu/bf16_avx512.h"
#include "ops/cpu/cpu_ops.h"
#include "ops/ref/checks.h"

HWY_BEFORE_NAMESPACE();
namespace dsa::ops::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;

// ---- act_quant: v = x * (1/s) equals x / s exactly (s is a power of two and 1/s is
// representable), then the RNE e4m3 encoding of dsa::f32_to_fp8 done with integer lane ops.
template <class D>
HWY_INLINE hn::Vec<hn::RebindToSigned<D>> EncodeFp8(D df, hn::Vec<D> v) {
  const hn::RebindToUnsigned<D> du;
  const hn::RebindToSigned<D> di;
  const auto nan = hn::IsNaN(v);
  const auto sign = hn::And(hn::ShiftRight<24>(hn::BitCast(du, v)), hn::Set(du, 0x80u));
  v = hn::Min(hn::Max(v, hn::Set(df, -448.0f)), hn::Set(df, 448.0f));
  const auto a = hn::Abs(v);
  auto r = hn::BitCast(du, a);
  r = hn::Add(r, hn::Add(hn::Set(du, 0x7ffffu), hn::And(hn::ShiftRight<20>(r), hn::Set(du, 1u))));
  r = hn::And(r, hn::Set(du, 0xfff00000u));
  const auto normal = hn::BitCast(di, hn::Sub(hn::ShiftRight<20>(r), hn::Set(du, 960u)));
  const auto sub = hn::ConvertTo(di, hn::Round(hn::Mul(a, hn::Set(df, 512.0f))));
  auto code = hn::IfThenElse(hn::RebindMask(di, hn::Lt(a, hn::Set(df, 0.015625f))), sub, normal);
  code = hn::IfThenElse(hn::RebindMask(di, nan), hn::Set(di, 0x7f), code);
  return hn::Or(code, hn::BitCast(di, sign));
}

void ActQuantRows(const ActQuant& p, int64_t m0, int64_t m1) {
  const DF df;
  const hn::Rebind<uint8_t, DF> d8;
  const int64_t L = int64_t(hn::Lanes(df)), nb = ceil_div(p.K, kBlock);
  for (int64_t m = m0; m < m1; ++m) {
    const uint16_t* x = reinterpret_cast<const uint16_t*>(p.x + m * p.K);
    fp8* q = p.q + m * p.K;
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t k0 = b * kBlock, k1 = std::min(p.K, k0 + kBlock);
      auto vmax = hn::Zero(df);
      int64_t k = k0;
      for (; k + L <= k1; k += L) {
        const auto v = LoadBf16(df, x + k);
        vmax = hn::Max(vmax, hn::IfThenZeroElse(hn::IsNaN(v), hn::Abs(v)));
      }
      float amax = hn::GetLane(hn::MaxOfLanes(df, vmax));
      for (; k < k1; ++k) amax = std::fmax(amax, std::fabs(bf16_to_f32(bf16{x[k]})));
      const float s = ue8m0_scale_for_amax(std::fmax(amax, 1e-4f));
      const float inv = 1.0f / s;
      p.s[m * nb + b] = s;
      const auto vinv = hn::Set(df, inv);
      k = k0;
      for (; k + L <= k1; k += L)
        hn::StoreU(hn::DemoteTo(d8, EncodeFp8(df, hn::Mul(LoadBf16(df, x + k), vinv))), d8, q + k);
      for (; k < k1; ++k) {
        float v = bf16_to_f32(bf16{x[k]}) / s;
        if (v > 448.0f) v = 448.0f;
        if (v < -448.0f) v = -448.0f;
        q[k] = f32_to_fp8(v);
      }
    }
  }
}

void ActQuantImpl(const ActQuant& p) {
  parallel_for(p.M, [&](int64_t m0, int64_t m1) { ActQuantRows(p, m0, m1); });
}

// ---- fp8_gemm: one arithmetic per output for every M, so a row's result never depends on the
// other rows of the call (batched decode, chunked prefill and grouped experts are bit-identical to
// one row alone). Per 4 output columns and 128-wide K block, the weight rows are dequantised once
// into fp32 and reused by every activation row; each block dot runs with lanes over k (FMAs of
// exact fp8 products), is reduced, scaled and accumulated in increasing kb. The row tiling (4, 2
// or 1 rows per pass) only decides which outputs a pass computes, never how.
template <int MT>
HWY_INLINE void DotBlock4(const float* HWY_RESTRICT a, int64_t lda, const float* HWY_RESTRICT w,
                          float (*dots)[4]) {
  const DF df;
  const size_t L = hn::Lanes(df);
  hn::Vec<DF> acc[MT][4];
  for (int i = 0; i < MT; ++i)
    for (int r = 0; r < 4; ++r) acc[i][r] = hn::Zero(df);
  for (size_t k = 0; k < size_t(kBlock); k += L) {
    const auto w0 = hn::Load(df, w + k), w1 = hn::Load(df, w + kBlock + k);
    const auto w2 = hn::Load(df, w + 2 * kBlock + k), w3 = hn::Load(df, w + 3 * kBlock + k);
    for (int i = 0; i < MT; ++i) {
      const auto av = hn::LoadU(df, a + i * lda + k);
      acc[i][0] = hn::MulAdd(av, w0, acc[i][0]);
      acc[i][1] = hn::MulAdd(av, w1, acc[i][1]);
      acc[i][2] = hn::MulAdd(av, w2, acc[i][2]);
      acc[i][3] = hn::MulAdd(av, w3, acc[i][3]);
    }
  }
  for (int i = 0; i < MT; ++i)
    for (int r = 0; r < 4; ++r) dots[i][r] = ReduceSumF(df, acc[i][r]);
}

// The same dot with the weights decoded on the fly (decode shapes: each weight is used by few
// rows, so staging it in fp32 costs more than it saves). LoadFp8Div256 gives the very floats the
// staged buffer holds, and the FMA sequence is the same: bit-identical to DotBlock4.
template <int MT>
HWY_INLINE void DotBlock4Fp8(const float* HWY_RESTRICT a, int64_t lda, const uint8_t* const* w, float (*dots)[4]) {
  const DF df;
  const size_t L = hn::Lanes(df);
  hn::Vec<DF> acc[MT][4];
  for (int i = 0; i < MT; ++i)
    for (int r = 0; r < 4; ++r) acc[i][r] = hn::Zero(df);
  for (size_t k = 0; k < size_t(kBlock); k += L) {
    const auto w0 = LoadFp8Div256(df, w[0] + k), w1 = LoadFp8Div256(df, w[1] + k);
    const auto w2 = LoadFp8Div256(df, w[2] + k), w3 = LoadFp8Div256(df, w[3] + k);
    for (int i = 0; i < MT; ++i) {
      const auto av = hn::LoadU(df, a + i * lda + k);
      acc[i][0] = hn::MulAdd(av, w0, acc[i][0]);
      acc[i][1] = hn::MulAdd(av, w1, acc[i][1]);
      acc[i][2] = hn::MulAdd(av, w2, acc[i][2]);
      acc[i][3] = hn::MulAdd(av, w3, acc[i][3]);
    }
  }
  for (int i = 0; i < MT; ++i)
    for (int r = 0; r < 4; ++r) dots[i][r] = ReduceSumF(df, acc[i][r]);
}

void DotPath(const Fp8Gemm& p, const float* a, int64_t Kp) {
  const DF df;
  const size_t L = hn::Lanes(df);
  const int64_t nb = ceil_div(p.K, kBlock), groups = ceil_div(p.N, 4);
  parallel_for(groups, [&](int64_t g0, int64_t g1) {
    auto wf = hwy::AllocateAligned<float>(4 * kBlock);  // [4][kBlock] dequantised weight rows
    std::vector<float> acc(size_t(p.M) * 4);
    HWY_ALIGN uint8_t pad[4][kBlock];
    HWY_ALIGN static const uint8_t zeros[kBlock] = {};
    const bool staged = p.M >= 8;  // only how weights are read, never the arithmetic
    float dots[4][4];
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t n0 = g * 4, nr = std::min<int64_t>(4, p.N - n0);
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t kb = 0; kb < nb; ++kb) {
        const int64_t k0 = kb * kBlock, kl = std::min<int64_t>(kBlock, p.K - k0);
        float ws[4] = {0, 0, 0, 0};
        const uint8_t* w8[4];
        for (int64_t r = 0; r < 4; ++r) {
          float* wr = wf.get() + r * kBlock;
          if (r >= nr) {
            w8[r] = zeros;
            if (staged) std::fill(wr, wr + kBlock, 0.0f);
            continue;
          }
          const uint8_t* row = p.w + (n0 + r) * p.K + k0;
          if (kl < kBlock) {
            std::memcpy(pad[r], row, size_t(kl));
            std::memset(pad[r] + kl, 0, size_t(kBlock - kl));
            row = pad[r];
          }
          w8[r] = row;
          if (staged)
            for (size_t k = 0; k < size_t(kBlock); k += L) hn::Store(LoadFp8Div256(df, row + k), df, wr + k);
          ws[r] = p.w_s[((n0 + r) / kBlock) * nb + kb];
        }
        for (int64_t m0 = 0; m0 < p.M;) {
          const int64_t rem = p.M - m0;
          const int mt = rem >= 4 ? 4 : (rem >= 2 ? 2 : 1);
          const float* am = a + m0 * Kp + k0;
          if (!staged) {
            if (mt == 4) DotBlock4Fp8<4>(am, Kp, w8, dots);
            else if (mt == 2) DotBlock4Fp8<2>(am, Kp, w8, dots);
            else DotBlock4Fp8<1>(am, Kp, w8, dots);
          } else if (mt == 4) {
            DotBlock4<4>(am, Kp, wf.get(), dots);
          } else if (mt == 2) {
            DotBlock4<2>(am, Kp, wf.get(), dots);
          } else {
            DotBlock4<1>(am, Kp, wf.get(), dots);
          }
          for (int i = 0; i < mt; ++i) {
            const float as = p.a_s[(m0 + i) * nb + kb];
            float* ar = acc.data() + (m0 + i) * 4;
            for (int64_t r = 0; r < nr; ++r) ar[r] += (dots[i][r] * 0x1p8f) * (as * ws[r]);
          }
          m0 += mt;
        }
      }
      for (int64_t m = 0; m < p.M; ++m)
        for (int64_t r = 0; r < nr; ++r) p.y[m * p.ldy + n0 + r] = f32_to_bf16(acc[size_t(m * 4 + r)]);
    }
  });
}

void Fp8GemmImpl(const Fp8Gemm& p) {
#if HWY_ARCH_X86 && (HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL)
  // AVX512-BF16: its own (fixed) arithmetic per output, used for every M so rows stay independent.
  if (bf16_dot_available()) return fp8_gemv_bf16(p);
#endif
  const int64_t nb = ceil_div(p.K, kBlock), Kp = nb * kBlock;
  auto a = hwy::AllocateAligned<float>(size_t(p.M * Kp));
  for (int64_t m = 0; m < p.M; ++m) {
    float* am = a.get() + m * Kp;
    for (int64_t k = 0; k < p.K; ++k) am[k] = kFp8Table[p.a[m * p.K + k]];
    for (int64_t k = p.K; k < Kp; ++k) am[k] = 0.0f;
  }
  DotPath(p, a.get(), Kp);
}

// ---- linear_f32: y = x @ bf16(w)^T in fp32, lanes over k, 4 weight rows x up to 4 x rows.
template <int MT>
HWY_INLINE void DotRowsBf16(const float* HWY_RESTRICT x, int64_t ldx, const uint16_t* const* w,
                            int64_t K, float (*out)[4]) {
  const DF df;
  const int64_t L = int64_t(hn::Lanes(df)), kv = K - K % L;
  hn::Vec<DF> acc[MT][4];
  for (int i = 0; i < MT; ++i)
    for (int r = 0; r < 4; ++r) acc[i][r] = hn::Zero(df);
  for (int64_t k = 0; k < kv; k += L) {
    const auto w0 = LoadBf16(df, w[0] + k), w1 = LoadBf16(df, w[1] + k);
    const auto w2 = LoadBf16(df, w[2] + k), w3 = LoadBf16(df, w[3] + k);
    for (int i = 0; i < MT; ++i) {
      const auto xv = hn::LoadU(df, x + i * ldx + k);
      acc[i][0] = hn::MulAdd(xv, w0, acc[i][0]);
      acc[i][1] = hn::MulAdd(xv, w1, acc[i][1]);
      acc[i][2] = hn::MulAdd(xv, w2, acc[i][2]);
      acc[i][3] = hn::MulAdd(xv, w3, acc[i][3]);
    }
  }
  for (int i = 0; i < MT; ++i)
    for (int r = 0; r < 4; ++r) {
      float s = ReduceSumF(df, acc[i][r]);
      for (int64_t k = kv; k < K; ++k) s += x[i * ldx + k] * bf16_to_f32(bf16{w[r][k]});
      out[i][r] = s;
    }
}

void LinearF32Impl(const LinearF32& p) {
  const int64_t groups = ceil_div(p.N, 4);
  parallel_for(groups, [&](int64_t g0, int64_t g1) {
    float out[4][4];
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t n0 = g * 4, nr = std::min<int64_t>(4, p.N - n0);
      const uint16_t* w[4];
      for (int64_t r = 0; r < 4; ++r)
        w[r] = reinterpret_cast<const uint16_t*>(p.w + std::min(n0 + r, p.N - 1) * p.K);
      for (int64_t m0 = 0; m0 < p.M;) {
        const int64_t rem = p.M - m0;
        const int mt = rem >= 4 ? 4 : (rem >= 2 ? 2 : 1);
        const float* xm = p.x + m0 * p.K;
        if (mt == 4) DotRowsBf16<4>(xm, p.K, w, p.K, out);
        else if (mt == 2) DotRowsBf16<2>(xm, p.K, w, p.K, out);
        else DotRowsBf16<1>(xm, p.K, w, p.K, out);
        for (int i = 0; i < mt; ++i)
          for (int64_t r = 0; r < nr; ++r) p.y[(m0 + i) * p.N + n0 + r] = out[i][r];
        m0 += mt;
      }
    }
  });
}

}  // namespace dsa::ops::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa::ops::cpu {

HWY_EXPORT(ActQuantImpl);
HWY_EXPORT(Fp8GemmImpl);
HWY_EXPORT(LinearF32Impl);

void act_quant(const ActQuant& p) {
  ref::check(p);
  HWY_DYNAMIC_DISPATCH(ActQuantImpl)(p);
}

void fp8_gemm(const Fp8Gemm& p) {
  ref::check(p);
  HWY_DYNAMIC_DISPATCH(Fp8GemmImpl)(p);
}

void linear_f32(const LinearF32& p) {
  ref::check(p);
  HWY_DYNAMIC_DISPATCH(LinearF32Impl)(p);
}

}  // namespace dsa::ops::cpu
#endif  // HWY_ONCE
