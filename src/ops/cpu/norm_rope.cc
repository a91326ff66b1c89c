// CPU RMSNorm, LayerNorm, RoPE, Hadamard and SwiGLU combine (spec §3.4-3.7, §8.1): Highway
// SIMD per row, rows split over the thread pool. Elementwise steps keep the reference's exact
// operation order (RoPE, Hadamard, silu_mul are bit-exact); norm sums are double, lane-wise.
#include <algorithm>
#include <cmath>
#include <vector>

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS HWY_SSSE3
#endif
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/cpu/norm_rope.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/cpu/simd-inl.h"

#include "base/error.h"
#include "base/thread_pool.h"
#include "hwy/aligned_allocator.h"
#include "ops/cpu/cpu_ops.h"
#include "ops/ref/checks.h"

HWY_BEFORE_NAMESPACE();
namespace dsa::ops::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;

inline const uint16_t* U16(const bf16* p) { return reinterpret_cast<const uint16_t*>(p); }
inline uint16_t* U16(bf16* p) { return reinterpret_cast<uint16_t*>(p); }

// Σ v² (or Σ v) of fp32 values in double, lane-wise then reduced.
template <bool kSquare>
HWY_INLINE double SumF64(const float* r, int64_t D) {
#if HWY_TARGET == HWY_SCALAR
  double s = 0.0;
  for (int64_t d = 0; d < D; ++d) s += kSquare ? double(r[d]) * double(r[d]) : double(r[d]);
  return s;
#else
  const DF df;
  const hn::Half<DF> dh;
  const hn::Repartition<double, DF> dd;
  const int64_t L = int64_t(hn::Lanes(df));
  auto a0 = hn::Zero(dd), a1 = hn::Zero(dd);
  int64_t d = 0;
  for (; d + L <= D; d += L) {
    const auto v = hn::LoadU(df, r + d);
    const auto lo = hn::PromoteTo(dd, hn::LowerHalf(dh, v));
    const auto hi = hn::PromoteTo(dd, hn::UpperHalf(dh, v));
    if (kSquare) {
      a0 = hn::MulAdd(lo, lo, a0);
      a1 = hn::MulAdd(hi, hi, a1);
    } else {
      a0 = hn::Add(a0, lo);
      a1 = hn::Add(a1, hi);
    }
  }
  double s = hn::GetLane(hn::SumOfLanes(dd, hn::Add(a0, a1)));
  for (; d < D; ++d) s += kSquare ? double(r[d]) * double(r[d]) : double(r[d]);
  return s;
#endif
}

void RmsNormImpl(const RmsNorm& p) {
  parallel_for(p.M, [&](int64_t m0, int64_t m1) {
    const DF df;
    const int64_t L = int64_t(hn::Lanes(df)), D = p.D;
    auto r = hwy::AllocateAligned<float>(size_t(D));
    for (int64_t m = m0; m < m1; ++m) {
      const uint16_t* x = U16(p.x + m * D);
      uint16_t* res = p.residual ? U16(p.residual + m * D) : nullptr;
      int64_t d = 0;
      for (; d + L <= D; d += L) {
        auto v = LoadBf16(df, x + d);
        if (res) {
          v = hn::Add(v, LoadBf16(df, res + d));
          StoreBf16(df, v, res + d);
        }
        hn::Store(v, df, r.get() + d);
      }
      for (; d < D; ++d) {
        float v = bf16_to_f32(bf16{x[d]});
        if (res) {
          v = v + bf16_to_f32(bf16{res[d]});
          res[d] = f32_to_bf16(v).bits;
        }
        r[size_t(d)] = v;
      }
      const float ms = float(SumF64<true>(r.get(), D) / double(D));
      const float inv = 1.0f / std::sqrt(ms + p.eps);
      uint16_t* y = U16(p.y + m * D);
      const auto vinv = hn::Set(df, inv);
      for (d = 0; d + L <= D; d += L)
        StoreBf16(df, hn::Mul(hn::LoadU(df, p.w + d), hn::Mul(hn::Load(df, r.get() + d), vinv)),
                  y + d);
      for (; d < D; ++d) y[d] = f32_to_bf16(p.w[d] * (r[size_t(d)] * inv)).bits;
    }
  });
}

void LayerNormImpl(const LayerNorm& p) {
  parallel_for(p.M, [&](int64_t m0, int64_t m1) {
    const DF df;
#if HWY_TARGET != HWY_SCALAR
    const hn::Half<DF> dh;
    const hn::Repartition<double, DF> dd;
#endif
    const int64_t L = int64_t(hn::Lanes(df)), D = p.D;
    auto r = hwy::AllocateAligned<float>(size_t(D));
    for (int64_t m = m0; m < m1; ++m) {
      const uint16_t* x = U16(p.x + m * D);
      int64_t d = 0;
      for (; d + L <= D; d += L) hn::Store(LoadBf16(df, x + d), df, r.get() + d);
      for (; d < D; ++d) r[size_t(d)] = bf16_to_f32(bf16{x[d]});
      const double mean_d = SumF64<false>(r.get(), D) / double(D);
      double var = 0.0;
      d = 0;
#if HWY_TARGET != HWY_SCALAR
      const auto vmean = hn::Set(dd, mean_d);
      auto a0 = hn::Zero(dd), a1 = hn::Zero(dd);
      for (; d + L <= D; d += L) {
        const auto v = hn::Load(df, r.get() + d);
        const auto lo = hn::Sub(hn::PromoteTo(dd, hn::LowerHalf(dh, v)), vmean);
        const auto hi = hn::Sub(hn::PromoteTo(dd, hn::UpperHalf(dh, v)), vmean);
        a0 = hn::MulAdd(lo, lo, a0);
        a1 = hn::MulAdd(hi, hi, a1);
      }
      var = hn::GetLane(hn::SumOfLanes(dd, hn::Add(a0, a1)));
#endif
      for (; d < D; ++d) var += (r[size_t(d)] - mean_d) * (r[size_t(d)] - mean_d);
      const float mean = float(mean_d);
      const float inv = 1.0f / std::sqrt(float(var / double(D)) + p.eps);
      uint16_t* y = U16(p.y + m * D);
      const auto vm = hn::Set(df, mean), vi = hn::Set(df, inv);
      for (d = 0; d + L <= D; d += L) {
        const auto n = hn::Mul(hn::Sub(hn::Load(df, r.get() + d), vm), vi);
        StoreBf16(df, hn::Add(hn::Mul(n, hn::LoadU(df, p.w + d)), hn::LoadU(df, p.b + d)), y + d);
      }
      for (; d < D; ++d)
        y[d] = f32_to_bf16(((r[size_t(d)] - mean) * inv) * p.w[d] + p.b[d]).bits;
    }
  });
}

void RopeImpl(const Rope& p) {
  const int64_t half = p.rope_dim / 2;
  parallel_for(p.M * p.H, [&](int64_t r0, int64_t r1) {
    const DF df;
    const int64_t L = int64_t(hn::Lanes(df));
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t m = row / p.H;
      const float* c = p.cos + int64_t(p.pos[m]) * half;
      const float* s = p.sin + int64_t(p.pos[m]) * half;
      uint16_t* x = U16(p.x + row * p.row_stride + p.off);
      int64_t i = 0;
      if (!p.interleaved) {
        for (; i + L <= half; i += L) {
          const auto a = LoadBf16(df, x + i), b = LoadBf16(df, x + i + half);
          const auto vc = hn::LoadU(df, c + i), vs = hn::LoadU(df, s + i);
          StoreBf16(df, hn::Sub(hn::Mul(a, vc), hn::Mul(b, vs)), x + i);
          StoreBf16(df, hn::Add(hn::Mul(a, vs), hn::Mul(b, vc)), x + i + half);
        }
      }
      for (; i < half; ++i) {
        const int64_t i0 = p.interleaved ? 2 * i : i;
        const int64_t i1 = p.interleaved ? 2 * i + 1 : i + half;
        const float a = bf16_to_f32(bf16{x[i0]}), b = bf16_to_f32(bf16{x[i1]});
        const float y0 = a * c[i] - b * s[i];
        const float y1 = a * s[i] + b * c[i];
        x[i0] = f32_to_bf16(y0).bits;
        x[i1] = f32_to_bf16(y1).bits;
      }
    }
  });
}

// Fast Walsh-Hadamard transform with the reference's butterflies (a+b, a-b) at strides
// 1, 2, 4, ...: the same fp32 operations on the same operands, hence bit-exact.
void HadamardImpl(const Hadamard& p) {
  const float scale = float(1.0 / std::sqrt(double(p.n)));
  parallel_for(p.M, [&](int64_t m0, int64_t m1) {
    const DF df;
    const int64_t L = int64_t(hn::Lanes(df)), n = p.n;
    auto v = hwy::AllocateAligned<float>(size_t(n));
    float* f = v.get();
    for (int64_t m = m0; m < m1; ++m) {
      uint16_t* x = U16(p.x + m * n);
      for (int64_t i = 0; i < n; ++i) f[i] = bf16_to_f32(bf16{x[i]});
      int64_t len = 1;
      for (; len < n && len < L; len *= 2)
        for (int64_t i = 0; i < n; i += 2 * len)
          for (int64_t j = i; j < i + len; ++j) {
            const float a = f[j], b = f[j + len];
            f[j] = a + b;
            f[j + len] = a - b;
          }
      for (; len < n; len *= 2)
        for (int64_t i = 0; i < n; i += 2 * len)
          for (int64_t j = i; j < i + len; j += L) {
            const auto a = hn::Load(df, f + j), b = hn::Load(df, f + j + len);
            hn::Store(hn::Add(a, b), df, f + j);
            hn::Store(hn::Sub(a, b), df, f + j + len);
          }
      const auto vs = hn::Set(df, scale);
      int64_t i = 0;
      for (; i + L <= n; i += L) StoreBf16(df, hn::Mul(hn::Load(df, f + i), vs), x + i);
      for (; i < n; ++i) x[i] = f32_to_bf16(f[i] * scale).bits;
    }
  });
}

}  // namespace dsa::ops::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa::ops::cpu {

HWY_EXPORT(RmsNormImpl);
HWY_EXPORT(LayerNormImpl);
HWY_EXPORT(RopeImpl);
HWY_EXPORT(HadamardImpl);

void rms_norm(const RmsNorm& p) {
  ref::check(p);
  HWY_DYNAMIC_DISPATCH(RmsNormImpl)(p);
}

void layer_norm(const LayerNorm& p) {
  ref::check(p);
  HWY_DYNAMIC_DISPATCH(LayerNormImpl)(p);
}

void rope(const Rope& p) {
  ref::check(p);
  HWY_DYNAMIC_DISPATCH(RopeImpl)(p);
}

void hadamard(const Hadamard& p) {
  ref::check(p);
  HWY_DYNAMIC_DISPATCH(HadamardImpl)(p);
}

// silu needs std::exp to stay bit-exact with the reference; the loop is memory-bound anyway.
void silu_mul(const SiluMul& p) {
  ref::check(p);
  const int64_t total = p.M * p.N, chunk = 4096;
  parallel_for(ceil_div(total, chunk), [&](int64_t c0, int64_t c1) {
    for (int64_t i = c0 * chunk; i < std::min(total, c1 * chunk); ++i) {
      const float g = bf16_to_f32(p.g[i]);
      const float silu = g / (1.0f + std::exp(-g));
      p.h[i] = f32_to_bf16(silu * bf16_to_f32(p.u[i]));
    }
  });
}

}  // namespace dsa::ops::cpu
#endif  // HWY_ONCE
