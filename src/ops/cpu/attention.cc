// CPU sparse attention: absorbed MLA decode (spec §6.2), MHA-mode prefill (spec §6.1) and the
// per-head bf16 matmul of the absorbed path. Highway SIMD, work split over the thread pool.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS HWY_SSSE3
#endif
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/cpu/attention.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/cpu/simd-inl.h"

#include "base/error.h"
#include "base/thread_pool.h"
#include "hwy/aligned_allocator.h"
#include "ops/cpu/bf16_avx512.h"
#include "ops/cpu/cpu_ops.h"
#include "ops/ref/checks.h"
#include "ops/cpu/scratch.h"

#ifndef DSA_OPS_CPU_ATTENTION_ONCE
#define DSA_OPS_CPU_ATTENTION_ONCE
namespace dsa::ops::ref {
void softmax_bf16(float* score, int64_t n);  // ops/ref: the reference's exact fp32 steps
}  // namespace dsa::ops::ref
namespace dsa::ops::cpu {
using Scratch = Buf<float>;
using ref::softmax_bf16;  // p = bf16(softmax(score[0:n])), shared with the reference
}  // namespace dsa::ops::cpu
#endif

HWY_BEFORE_NAMESPACE();
namespace dsa::ops::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;

inline const uint16_t* U16(const bf16* p) { return reinterpret_cast<const uint16_t*>(p); }
inline uint16_t* U16(bf16* p) { return reinterpret_cast<uint16_t*>(p); }

// o[h, i0:i0+2L] = Σ_j p[h, j] c[j, i0:...] for HB heads, j increasing. p (bf16) x c (fp8 * 2^e)
// products are exact in fp32, so the FMA matches the reference's mul-then-add bit for bit.
template <int HB>
HWY_INLINE void WeightedSum(const float* HWY_RESTRICT pr, size_t ldp, const float* HWY_RESTRICT c,
                            int64_t ldc, int64_t n, hn::Vec<DF> (*acc)[2]) {
  const DF df;
  const size_t L = hn::Lanes(df);
  for (int i = 0; i < HB; ++i) acc[i][0] = acc[i][1] = hn::Zero(df);
  for (int64_t j = 0; j < n; ++j) {
    const auto c0 = hn::LoadU(df, c + j * ldc), c1 = hn::LoadU(df, c + j * ldc + int64_t(L));
    for (int i = 0; i < HB; ++i) {
      const auto pv = hn::Set(df, pr[size_t(i) * ldp + size_t(j)]);
      acc[i][0] = hn::MulAdd(pv, c0, acc[i][0]);
      acc[i][1] = hn::MulAdd(pv, c1, acc[i][1]);
    }
  }
}

// Absorbed decode, per query s: (1) gather + dequantise the selected rows once into c [n, kv_lora]
// and the transposed cT [kv_lora + rope, np]; (2) scores for 4 heads x 2L keys at a time with
// lanes over keys (increasing-i sums, exact products: bit-exact); (3) softmax per head;
// (4) weighted sums for 8 heads x 2L latent dims at a time.
void SparseMlaDecodeImpl(const SparseMlaDecode& p) {
#if HWY_ARCH_X86 && (HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL)
  if (bf16_dot_available()) return sparse_mla_decode_bf16(p);  // dot order differs (bf16 pairs)
#endif
  const DF df;
  const size_t VL = hn::Lanes(df), TK = 2 * VL;
  const int64_t Lr = p.layout.kv_lora, R = p.layout.rope, H = p.H, F = Lr + R;
  const int64_t row_bytes = p.layout.row_bytes(), nb = ceil_div(Lr, kBlock);
  static thread_local Scratch s_c, s_cT, s_sc, s_q;
  std::vector<int32_t> sel;
  for (int64_t s = 0; s < p.S; ++s) {
    sel.clear();
    for (int64_t j = 0; j < p.K; ++j)
      if (p.idx[s * p.K + j] >= 0) sel.push_back(p.idx[s * p.K + j]);
    const int64_t n = int64_t(sel.size()), np = ceil_div(std::max<int64_t>(n, 1), TK) * TK;
    bf16* o = p.o_lat + s * H * Lr;
    if (n == 0) {
      std::fill(o, o + H * Lr, bf16{});
      continue;
    }
    float* c = s_c.get(size_t(n * Lr));
    float* cT = s_cT.get(size_t(F * np));
    float* sc = s_sc.get(size_t(H * np));
    float* qf = s_q.get(size_t(H * F));
    // (1) dequantise (parallel over key tiles) and convert q (parallel over heads).
    parallel_for(np / int64_t(TK), [&](int64_t b0, int64_t b1) {
      const DF df;
      for (int64_t j = b0 * int64_t(TK); j < b1 * int64_t(TK); ++j) {
        if (j >= n) {
          for (int64_t i = 0; i < F; ++i) cT[i * np + j] = 0.0f;
          continue;
        }
        const uint8_t* row = p.cache + int64_t(sel[size_t(j)]) * row_bytes;
        float* cj = c + j * Lr;
        for (int64_t b = 0; b < nb; ++b) {
          float scl;
          std::memcpy(&scl, row + p.layout.scale_off() + 4 * b, 4);
          const int64_t i1 = std::min(Lr, (b + 1) * kBlock);
          int64_t i = b * kBlock;
          const auto vs = hn::Set(df, scl * 0x1p8f);  // power of two: exact
          for (; i + int64_t(VL) <= i1; i += int64_t(VL))
            hn::StoreU(hn::Mul(LoadFp8Div256(df, row + i), vs), df, cj + i);
          for (; i < i1; ++i) cj[i] = kFp8Table[row[i]] * scl;
        }
        for (int64_t i = 0; i < Lr; ++i) cT[i * np + j] = cj[i];
        for (int64_t i = 0; i < R; ++i) {
          bf16 v;
          std::memcpy(&v.bits, row + p.layout.rope_off() + 2 * i, 2);
          cT[(Lr + i) * np + j] = bf16_to_f32(v);
        }
      }
    });
    for (int64_t h = 0; h < H; ++h) {
      const bf16* qa = p.q_abs + (s * H + h) * Lr;
      for (int64_t i = 0; i < Lr; ++i) qf[h * F + i] = bf16_to_f32(qa[i]);
      for (int64_t i = 0; i < R; ++i) qf[h * F + Lr + i] = bf16_to_f32(p.q_pe[(s * H + h) * R + i]);
    }
    // (2) scores: score = bf16(bf16(bf16(d1) + bf16(d2)) * scale).
    parallel_for(np / int64_t(TK), [&](int64_t b0, int64_t b1) {
      const DF df;
      hn::Vec<DF> d1[4][2], d2[4][2];
      const auto vscale = hn::Set(df, p.scale);
      for (int64_t b = b0; b < b1; ++b) {
        const float* col = cT + b * int64_t(TK);
        for (int64_t h = 0; h < H;) {
          const int mt = H - h >= 4 ? 4 : 1;
          const float* q = qf + h * F;
          if (mt == 4) {
            RowsTimesTile<4>(df, q, F, Lr, col, size_t(np), d1);
            RowsTimesTile<4>(df, q + Lr, F, R, col + Lr * np, size_t(np), d2);
          } else {
            RowsTimesTile<1>(df, q, F, Lr, col, size_t(np), d1);
            RowsTimesTile<1>(df, q + Lr, F, R, col + Lr * np, size_t(np), d2);
          }
          for (int i = 0; i < mt; ++i)
            for (int v = 0; v < 2; ++v) {
              const auto sum = RoundBf16(df, hn::Add(RoundBf16(df, d1[i][v]), RoundBf16(df, d2[i][v])));
              hn::Store(RoundBf16(df, hn::Mul(sum, vscale)), df,
                        sc + (h + i) * np + b * int64_t(TK) + int64_t(v * VL));
            }
          h += mt;
        }
      }
    });
    // (3) softmax per head over the n real keys.
    parallel_for(H, [&](int64_t h0, int64_t h1) {
      for (int64_t h = h0; h < h1; ++h) softmax_bf16(sc + h * np, n);
    });
    // (4) o = bf16(Σ p c): items = (8-head group, 2L-dim chunk); dim tail done in scalar.
    const int64_t hg = ceil_div(H, 8), dc = ceil_div(Lr, int64_t(TK));
    parallel_for(hg * dc, [&](int64_t i0, int64_t i1) {
      const DF df;
      hn::Vec<DF> acc[8][2];
      for (int64_t it = i0; it < i1; ++it) {
        const int64_t h0 = (it / dc) * 8, hn_ = std::min<int64_t>(8, H - h0);
        const int64_t d0 = (it % dc) * int64_t(TK);
        if (d0 + int64_t(TK) > Lr) {
          for (int64_t h = h0; h < h0 + hn_; ++h)
            for (int64_t i = d0; i < Lr; ++i) {
              float a = 0.0f;
              for (int64_t j = 0; j < n; ++j) a += sc[h * np + j] * c[j * Lr + i];
              o[h * Lr + i] = f32_to_bf16(a);
            }
          continue;
        }
        for (int64_t h = h0; h < h0 + hn_;) {
          const int hb = h0 + hn_ - h >= 8 ? 8 : 1;
          if (hb == 8) WeightedSum<8>(sc + h * np, size_t(np), c + d0, Lr, n, acc);
          else WeightedSum<1>(sc + h * np, size_t(np), c + d0, Lr, n, acc);
          for (int i = 0; i < hb; ++i) {
            StoreBf16(df, acc[i][0], U16(o + (h + i) * Lr + d0));
            StoreBf16(df, acc[i][1], U16(o + (h + i) * Lr + d0 + int64_t(VL)));
          }
          h += hb;
        }
      }
    });
  }
}

// q·k over d (lanes over d, 4 keys at a time, reduced): the only deviation from the reference's
// order. Products of bf16 values are exact, so the value pass (j increasing) is bit-exact.
HWY_INLINE void Dots4(const float* q, const uint16_t* const* k, int64_t D, float* out) {
  const DF df;
  const int64_t L = int64_t(hn::Lanes(df)), dv = D - D % L;
  auto a0 = hn::Zero(df), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t d = 0; d < dv; d += L) {
    const auto qv = hn::LoadU(df, q + d);
    a0 = hn::MulAdd(qv, LoadBf16(df, k[0] + d), a0);
    a1 = hn::MulAdd(qv, LoadBf16(df, k[1] + d), a1);
    a2 = hn::MulAdd(qv, LoadBf16(df, k[2] + d), a2);
    a3 = hn::MulAdd(qv, LoadBf16(df, k[3] + d), a3);
  }
  out[0] = ReduceSumF(df, a0);
  out[1] = ReduceSumF(df, a1);
  out[2] = ReduceSumF(df, a2);
  out[3] = ReduceSumF(df, a3);
  for (int r = 0; r < 4; ++r)
    for (int64_t d = dv; d < D; ++d) out[r] += q[d] * bf16_to_f32(bf16{k[r][d]});
}

void SparseMhaPrefillImpl(const SparseMhaPrefill& p) {
#if HWY_ARCH_X86 && (HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL)
  if (bf16_dot_available()) return sparse_mha_prefill_bf16(p);  // dot/P·V order differs
#endif
  parallel_for(p.S * p.H, [&](int64_t i0, int64_t i1) {
    const DF df;
    const int64_t L = int64_t(hn::Lanes(df)), H = p.H;
    std::vector<int32_t> sel;
    std::vector<float> score;
    auto qf = hwy::AllocateAligned<float>(size_t(p.d_qk));
    auto acc = hwy::AllocateAligned<float>(size_t(p.d_v));
    int64_t cur_s = -1;
    for (int64_t it = i0; it < i1; ++it) {
      const int64_t s = it / H, h = it % H;
      if (s != cur_s) {
        sel.clear();
        for (int64_t j = 0; j < p.K; ++j)
          if (p.idx[s * p.K + j] >= 0) sel.push_back(p.idx[s * p.K + j]);
        score.resize(sel.size());
        cur_s = s;
      }
      const int64_t n = int64_t(sel.size());
      const bf16* q = p.q + (s * H + h) * p.d_qk;
      for (int64_t d = 0; d < p.d_qk; ++d) qf[size_t(d)] = bf16_to_f32(q[d]);
      for (int64_t j = 0; j < n; j += 4) {
        const uint16_t* k[4];
        for (int r = 0; r < 4; ++r)
          k[r] = U16(p.k + (int64_t(sel[size_t(std::min(j + r, n - 1))]) * H + h) * p.d_qk);
        float dots[4];
        Dots4(qf.get(), k, p.d_qk, dots);
        for (int r = 0; r < 4 && j + r < n; ++r)
          score[size_t(j + r)] = round_bf16(round_bf16(dots[r]) * p.scale);
      }
      softmax_bf16(score.data(), n);
      bf16* o = p.o + (s * H + h) * p.d_v;
      int64_t d = 0;
      for (; d + 2 * L <= p.d_v; d += 2 * L) {
        auto a0 = hn::Zero(df), a1 = a0;
        for (int64_t j = 0; j < n; ++j) {
          const uint16_t* v = U16(p.v + (int64_t(sel[size_t(j)]) * H + h) * p.d_v + d);
          const auto pv = hn::Set(df, score[size_t(j)]);
          a0 = hn::MulAdd(pv, LoadBf16(df, v), a0);
          a1 = hn::MulAdd(pv, LoadBf16(df, v + L), a1);
        }
        StoreBf16(df, a0, U16(o + d));
        StoreBf16(df, a1, U16(o + d + L));
      }
      for (; d < p.d_v; ++d) {
        float a = 0.0f;
        for (int64_t j = 0; j < n; ++j)
          a += score[size_t(j)] * bf16_to_f32(p.v[(int64_t(sel[size_t(j)]) * H + h) * p.d_v + d]);
        o[d] = f32_to_bf16(a);
      }
    }
  });
}

// y[s,h,:] = x[s,h,:] @ W_h. Non-transposed W (rows over k): lanes over n, k increasing, exact
// bf16 products: bit-exact. Transposed W (rows over n): lanes over k, reduced per output.
void HeadMatmulImpl(const HeadMatmul& p) {
  parallel_for(p.S * p.H, [&](int64_t i0, int64_t i1) {
    const DF df;
    const int64_t L = int64_t(hn::Lanes(df)), K = p.K, N = p.N;
    auto xf = hwy::AllocateAligned<float>(size_t(K));
    for (int64_t it = i0; it < i1; ++it) {
      const int64_t s = it / p.H, h = it % p.H;
      const bf16* x = p.x + s * p.x_s_stride + h * p.x_h_stride;
      for (int64_t k = 0; k < K; ++k) xf[size_t(k)] = bf16_to_f32(x[k]);
      const bf16* w = p.w + h * p.w_head_stride;
      bf16* y = p.y + (s * p.H + h) * N;
      if (p.trans_w) {
        for (int64_t n0 = 0; n0 < N; n0 += 4) {
          const uint16_t* wr[4];
          for (int r = 0; r < 4; ++r) wr[r] = U16(w + std::min(n0 + r, N - 1) * p.w_row_stride);
          float dots[4];
          Dots4(xf.get(), wr, K, dots);
          for (int r = 0; r < 4 && n0 + r < N; ++r) y[n0 + r] = f32_to_bf16(dots[r]);
        }
        continue;
      }
      int64_t n0 = 0;
      for (; n0 + 4 * L <= N; n0 += 4 * L) {
        auto a0 = hn::Zero(df), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t k = 0; k < K; ++k) {
          const uint16_t* wk = U16(w + k * p.w_row_stride + n0);
          const auto xv = hn::Set(df, xf[size_t(k)]);
          a0 = hn::MulAdd(xv, LoadBf16(df, wk), a0);
          a1 = hn::MulAdd(xv, LoadBf16(df, wk + L), a1);
          a2 = hn::MulAdd(xv, LoadBf16(df, wk + 2 * L), a2);
          a3 = hn::MulAdd(xv, LoadBf16(df, wk + 3 * L), a3);
        }
        StoreBf16(df, a0, U16(y + n0));
        StoreBf16(df, a1, U16(y + n0 + L));
        StoreBf16(df, a2, U16(y + n0 + 2 * L));
        StoreBf16(df, a3, U16(y + n0 + 3 * L));
      }
      for (; n0 < N; ++n0) {
        float a = 0.0f;
        for (int64_t k = 0; k < K; ++k) a += xf[size_t(k)] * bf16_to_f32(w[k * p.w_row_stride + n0]);
        y[n0] = f32_to_bf16(a);
      }
    }
  });
}

}  // namespace dsa::ops::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa::ops::cpu {

HWY_EXPORT(SparseMlaDecodeImpl);
HWY_EXPORT(SparseMhaPrefillImpl);
HWY_EXPORT(HeadMatmulImpl);

void sparse_mla_decode(const SparseMlaDecode& p) {
  ref::check(p);
  HWY_DYNAMIC_DISPATCH(SparseMlaDecodeImpl)(p);
}

void sparse_mha_prefill(const SparseMhaPrefill& p) {
  ref::check(p);
  HWY_DYNAMIC_DISPATCH(SparseMhaPrefillImpl)(p);
}

void head_matmul(const HeadMatmul& p) {
  ref::check(p);
  HWY_DYNAMIC_DISPATCH(HeadMatmulImpl)(p);
}

}  // namespace dsa::ops::cpu
#endif  // HWY_ONCE
