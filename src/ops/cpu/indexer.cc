// CPU lightning-indexer logits over the paged FP8 key cache (spec §3.8) and top-k by radix
// select (spec §7 step 10). Both are bit-exact with ops/ref (see the comments below).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS HWY_SSSE3
#endif
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/cpu/indexer.cc"
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

// MT heads x 2 vectors of keys: dot[h][s] = Σ_d q[h,d] * kT[d,s] in increasing d. FP8 x FP8
// products are exact in fp32, so the FMA rounds exactly like the reference's mul-then-add.
template <int MT>
HWY_INLINE void HeadsKernel(const float* HWY_RESTRICT q, int64_t D, const float* HWY_RESTRICT kT,
                            size_t TK, hn::Vec<DF> (*out)[2]) {
  const DF df;
  const size_t L = hn::Lanes(df);
  hn::Vec<DF> acc[MT][2];
  for (int i = 0; i < MT; ++i) acc[i][0] = acc[i][1] = hn::Zero(df);
  for (int64_t d = 0; d < D; ++d) {
    const auto k0 = hn::Load(df, kT + size_t(d) * TK), k1 = hn::Load(df, kT + size_t(d) * TK + L);
    for (int i = 0; i < MT; ++i) {
      const auto qv = hn::Set(df, q[i * D + d]);
      acc[i][0] = hn::MulAdd(qv, k0, acc[i][0]);
      acc[i][1] = hn::MulAdd(qv, k1, acc[i][1]);
    }
  }
  for (int i = 0; i < MT; ++i) {
    out[i][0] = acc[i][0];
    out[i][1] = acc[i][1];
  }
}

// Work item = (query row t, tile of 2 vectors of keys). Keys of a tile are gathered through the
// block table into a d-major byte tile, dequantised (x 2^-8, exact) and scored for all heads;
// the head sum runs in increasing h with the reference's mul-then-add.
void IndexerLogitsImpl(const IndexerLogits& p) {
#if HWY_ARCH_X86 && (HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL)
  if (bf16_dot_available()) return indexer_logits_bf16(p);  // same values up to summation order
#endif
  const DF df;
  const size_t L = hn::Lanes(df), TK = 2 * L;
  const IndexPages& kp = p.k;
  const int64_t H = p.H, D = kp.D, tpr = ceil_div(p.N, int64_t(TK));
  const float ninf = -std::numeric_limits<float>::infinity();
  parallel_for(p.S * tpr, [&](int64_t i0, int64_t i1) {
    const DF df;
    auto qf = hwy::AllocateAligned<float>(size_t(H * D));
    auto kT = hwy::AllocateAligned<float>(size_t(D) * TK);
    auto kT8 = hwy::AllocateAligned<uint8_t>(size_t(D) * TK);
    HWY_ALIGN float ks[2 * HWY_MAX_BYTES / sizeof(float)];
    HWY_ALIGN float res[2 * HWY_MAX_BYTES / sizeof(float)];
    hn::Vec<DF> dots[4][2];
    const auto k2p8 = hn::Set(df, 0x1p8f), zero = hn::Zero(df);
    int64_t cur_t = -1;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t t = i / tpr, s0 = (i % tpr) * int64_t(TK), e = p.end[t];
      float* out = p.out + t * p.N;
      const int64_t s_hi = std::min<int64_t>(p.N, s0 + int64_t(TK));
      if (s0 >= e) {
        std::fill(out + s0, out + s_hi, ninf);
        continue;
      }
      if (t != cur_t) {
        for (int64_t j = 0; j < H * D; ++j) qf[size_t(j)] = kFp8Table[p.q[t * H * D + j]];
        cur_t = t;
      }
      const int32_t* bt = kp.block_table + t * kp.bt_stride;
      const int64_t ns = std::min<int64_t>(int64_t(TK), e - s0);
      for (int64_t j = 0; j < int64_t(TK); ++j) {
        if (j < ns) {
          const int64_t s = s0 + j;
          const uint8_t* base = kp.pool + int64_t(bt[s / kp.page_size]) * kp.page_bytes();
          const int64_t slot = s % kp.page_size;
          const uint8_t* key = base + slot * D;
          std::memcpy(&ks[j], base + kp.page_size * D + 4 * slot, 4);
          for (int64_t d = 0; d < D; ++d) kT8[size_t(d) * TK + size_t(j)] = key[d];
        } else {
          ks[j] = 0.0f;
          for (int64_t d = 0; d < D; ++d) kT8[size_t(d) * TK + size_t(j)] = 0;
        }
      }
      for (size_t d = 0; d < size_t(D); ++d) {
        hn::Store(LoadFp8Div256(df, kT8.get() + d * TK), df, kT.get() + d * TK);
        hn::Store(LoadFp8Div256(df, kT8.get() + d * TK + L), df, kT.get() + d * TK + L);
      }
      auto acc0 = zero, acc1 = zero;
      const float* w = p.w + t * H;
      for (int64_t h = 0; h < H;) {
        const int mt = H - h >= 4 ? 4 : 1;
        if (mt == 4) HeadsKernel<4>(qf.get() + h * D, D, kT.get(), TK, dots);
        else HeadsKernel<1>(qf.get() + h * D, D, kT.get(), TK, dots);
        for (int j = 0; j < mt; ++j) {
          const auto wv = hn::Set(df, w[h + j]);
          acc0 = hn::Add(acc0, hn::Mul(wv, hn::Max(hn::Mul(dots[j][0], k2p8), zero)));
          acc1 = hn::Add(acc1, hn::Mul(wv, hn::Max(hn::Mul(dots[j][1], k2p8), zero)));
        }
        h += mt;
      }
      hn::Store(hn::Mul(acc0, hn::Load(df, ks)), df, res);
      hn::Store(hn::Mul(acc1, hn::Load(df, ks + L)), df, res + L);
      for (int64_t j = 0; j < s_hi - s0; ++j) out[s0 + j] = j < ns ? res[j] : ninf;
    }
  });
}

}  // namespace dsa::ops::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsa::ops::cpu {

HWY_EXPORT(IndexerLogitsImpl);

void indexer_logits(const IndexerLogits& p) {
  ref::check(p);  // incl. every page id: the workers assume valid input
  HWY_DYNAMIC_DISPATCH(IndexerLogitsImpl)(p);
}

namespace {

// Order-preserving map float -> uint32 (larger float, larger key). NaN ranks as -inf and -0 as
// +0, exactly the reference's comparison (NaN replaced by -inf, -0 == +0 tie by index).
inline uint32_t sort_key(float f) {
  if (std::isnan(f)) f = -std::numeric_limits<float>::infinity();
  if (f == 0.0f) f = 0.0f;
  const uint32_t u = std::bit_cast<uint32_t>(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Radix select of the kk-th largest key (4 passes of 8 bits; later passes only over the
// candidates sharing the prefix), then one ordered pass: keys above the threshold plus the
// lowest-index keys equal to it. Output is ascending: identical to the reference's choice.
void topk_row(const float* sc, int64_t e, int64_t k, int32_t* idx, std::vector<uint32_t>& keys,
              std::vector<uint32_t>& cand) {
  const int64_t kk = std::min(k, e);
  int64_t j = 0;
  if (kk == e) {
    for (; j < e; ++j) idx[j] = int32_t(j);
  } else if (kk > 0) {
    keys.resize(size_t(e));
    for (int64_t s = 0; s < e; ++s) keys[size_t(s)] = sort_key(sc[s]);
    uint32_t prefix = 0;
    int64_t need = kk;
    for (int shift = 24; shift >= 0; shift -= 8) {
      uint32_t hist[256] = {};
      const std::vector<uint32_t>& src = shift == 24 ? keys : cand;
      for (uint32_t u : src) ++hist[(u >> shift) & 255u];
      int64_t cum = 0;
      int d = 255;
      for (; d > 0 && cum + hist[d] < need; --d) cum += hist[d];
      need -= cum;
      prefix |= uint32_t(d) << shift;
      if (shift == 0) break;
      // Keep the candidates with the chosen digit (compacted for the next pass).
      size_t w = 0;
      if (shift == 24) {
        cand.resize(hist[d]);
        for (uint32_t u : keys)
          if ((u >> 24) == uint32_t(d)) cand[w++] = u;
      } else {
        for (uint32_t u : cand)
          if (((u >> shift) & 255u) == uint32_t(d)) cand[w++] = u;
        cand.resize(w);
      }
    }
    for (int64_t s = 0; s < e && j < kk; ++s) {
      const uint32_t u = keys[size_t(s)];
      if (u > prefix || (u == prefix && need-- > 0)) idx[j++] = int32_t(s);
    }
  }
  for (; j < k; ++j) idx[j] = -1;
}

}  // namespace

void topk(const TopK& p) {
  ref::check(p);
  parallel_for(p.S, [&](int64_t t0, int64_t t1) {
    std::vector<uint32_t> keys, cand;
    for (int64_t t = t0; t < t1; ++t)
      topk_row(p.scores + t * p.N, p.end[t], p.k, p.idx + t * p.k, keys, cand);
  });
}

}  // namespace dsa::ops::cpu
#endif  // HWY_ONCE
