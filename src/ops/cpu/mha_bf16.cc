// AVX512-BF16 sparse MHA prefill (spec §6.1): per (head, query) q·k by vdpbf16ps for 16 keys at a
// time (lane sums reduced by a fixed tree), vector softmax, P·V by vdpbf16ps over key pairs.
// GCC 12 flags its own _mm512_undefined_* inside max/reduce intrinsics (false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "base/numeric.h"
#include "base/thread_pool.h"
#include "hwy/aligned_allocator.h"
#include "ops/cpu/bf16_avx512.h"
#include "ops/cpu/bf16_util.h"
#include "ops/cpu/scratch.h"

namespace dsa::ops::cpu {
namespace {
using namespace bf16k;


constexpr int64_t kKB = 16;  // keys per score block (one reduced vector of scores)
constexpr int64_t kHB = 2;   // heads per item (their rows of one key are adjacent in memory)

struct Dims {
  int64_t H, dqk, dv, NCq, NCv, Kp;
  __mmask32 mq, mv;  // valid elements of the last 32-wide chunk of a q/k resp. v row
};

// K/V rows of one head block: k + t * rsk (resp. v + t * rsv) is head h0's row of key t; the next
// heads of the block follow it. Either the caller's tensors or a packed copy of the block.
struct Src {
  const uint16_t *k, *v;
  int64_t rsk, rsv;
};

DSA_BF16_INLINE __mmask32 ChunkMask(int64_t c, int64_t nc, __mmask32 last) {
  return c + 1 == nc ? last : __mmask32(0xffffffffu);
}

// Lane j of the result = sum of the 16 lanes of a[j], by a fixed tree (independent of threads).
DSA_BF16_INLINE __m512 Reduce16(const __m512* a) {
  __m512 b[8], c[4], d[2];
  for (int i = 0; i < 8; ++i)
    b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x44),
                         _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xEE));
  for (int i = 0; i < 4; ++i)
    c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0xDD));
  for (int i = 0; i < 2; ++i)
    d[i] = _mm512_add_ps(_mm512_unpacklo_ps(c[2 * i], c[2 * i + 1]),
                         _mm512_unpackhi_ps(c[2 * i], c[2 * i + 1]));
  const __m512 e = _mm512_add_ps(_mm512_shuffle_ps(d[0], d[1], 0x44), _mm512_shuffle_ps(d[0], d[1], 0xEE));
  // e lane 4L + m holds key 4m + L.
  const __m512i perm = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
  return _mm512_permutexvar_ps(perm, e);
}

// acc[j] += q[c0:c0+G chunks] · rows[j][same]: per lane, pair products summed in increasing dim.
template <int G>
DSA_BF16_INLINE void DotChunks(const Dims& d, const __m512i* q, const uint16_t* const* rows,
                               int64_t c0, __m512* acc) {
  for (int g = 0; g < G; ++g) {
    const int64_t c = c0 + g;
    const __mmask32 m = ChunkMask(c, d.NCq, d.mq);
    const __m512i qv = q[c];
    for (int j = 0; j < kKB; ++j)
      acc[j] = Dp(acc[j], qv, _mm512_maskz_loadu_epi16(m, rows[j] + 32 * c));
  }
}

// o[h, c0*32 : (c0+G)*32] = Σ_j p_hj v_hj for HB consecutive heads h0.. over nq key pairs
// (increasing), lanes over dims in unpack order (lo: dims 8L+0..3, hi: 8L+4..7 of 128-bit lane
// L), restored before the bf16 store. Heads inner: the pages of a key's rows are shared.
template <int HB, int G>
DSA_BF16_INLINE void PvChunks(const Dims& d, const uint16_t* v, int64_t rs, const int32_t* sel,
                              int64_t n, const uint32_t* p2, int64_t c0, uint16_t* o) {
  __m512 lo[HB][G], hi[HB][G];
  for (int i = 0; i < HB; ++i)
    for (int g = 0; g < G; ++g) lo[i][g] = hi[i][g] = _mm512_setzero_ps();
  const int64_t nq = ceil_div(n, int64_t(2)), lines = ceil_div(HB * d.dv * 2, int64_t(64));
  for (int64_t q = 0; q < nq; ++q) {
    if (q + 4 < nq)
      for (int64_t l = 0; l < lines; ++l) {
        _mm_prefetch(reinterpret_cast<const char*>(v + sel[2 * q + 8] * rs) + 64 * l, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(v + sel[2 * q + 9] * rs) + 64 * l, _MM_HINT_T0);
      }
    const uint16_t* ra = v + sel[2 * q] * rs;
    const uint16_t* rb = v + sel[2 * q + 1] * rs;
    const bool has_b = 2 * q + 1 < n;
    for (int i = 0; i < HB; ++i) {
      const __m512i pp = _mm512_set1_epi32(int(p2[i * d.Kp / 2 + q]));
      for (int g = 0; g < G; ++g) {
        const int64_t c = c0 + g;
        const __mmask32 m = ChunkMask(c, d.NCv, d.mv);
        const __m512i va = _mm512_maskz_loadu_epi16(m, ra + i * d.dv + 32 * c);
        const __m512i vb = _mm512_maskz_loadu_epi16(has_b ? m : __mmask32(0), rb + i * d.dv + 32 * c);
        lo[i][g] = Dp(lo[i][g], _mm512_unpacklo_epi16(va, vb), pp);
        hi[i][g] = Dp(hi[i][g], _mm512_unpackhi_epi16(va, vb), pp);
      }
    }
  }
  // dims 0..15 of a chunk: lo lanes 0-3, hi 0-3, lo 4-7, hi 4-7; dims 16..31 likewise from 8-15.
  const __m512i i0 = _mm512_set_epi32(23, 22, 21, 20, 7, 6, 5, 4, 19, 18, 17, 16, 3, 2, 1, 0);
  const __m512i i1 = _mm512_set_epi32(31, 30, 29, 28, 15, 14, 13, 12, 27, 26, 25, 24, 11, 10, 9, 8);
  for (int i = 0; i < HB; ++i)
    for (int g = 0; g < G; ++g) {
      const int64_t c = c0 + g;
      const __mmask32 m = ChunkMask(c, d.NCv, d.mv);
      const __m256i b0 = (__m256i)_mm512_cvtneps_pbh(_mm512_permutex2var_ps(lo[i][g], i0, hi[i][g]));
      const __m256i b1 = (__m256i)_mm512_cvtneps_pbh(_mm512_permutex2var_ps(lo[i][g], i1, hi[i][g]));
      const __m512i bb = _mm512_inserti64x4(_mm512_castsi256_si512(b0), b1, 1);
      _mm512_mask_storeu_epi16(o + i * d.dv + 32 * c, m, bb);
    }
}

template <int HB>
DSA_BF16_INLINE void Pv(const Dims& d, const uint16_t* v, int64_t rs, const int32_t* sel, int64_t n,
                        const uint32_t* p2, uint16_t* o) {
  for (int64_t c0 = 0; c0 < d.NCv; c0 += 2) {
    if (d.NCv - c0 >= 2) PvChunks<HB, 2>(d, v, rs, sel, n, p2, c0, o);
    else PvChunks<HB, 1>(d, v, rs, sel, n, p2, c0, o);
  }
}

// One query s and heads h0..h0+hb (hb <= kHB) over its n >= 1 selected keys sel[0:Kp) (padded
// with valid rows). Per head: scores, softmax and P·V in the reference's rounding points.
DSA_BF16_TARGET void Item(const SparseMhaPrefill& p, const Dims& d, const Src& src,
                          const int32_t* sel, int64_t n, int64_t s, int64_t h0, int64_t hb,
                          __m512i* qb, float* sc, uint16_t* pb) {
  const uint16_t *k = src.k, *v = src.v;
  for (int64_t i = 0; i < hb; ++i) {
    const uint16_t* q = reinterpret_cast<const uint16_t*>(p.q + (s * d.H + h0 + i) * d.dqk);
    for (int64_t c = 0; c < d.NCq; ++c)
      qb[i * d.NCq + c] = _mm512_maskz_loadu_epi16(ChunkMask(c, d.NCq, d.mq), q + 32 * c);
  }
  const int64_t nb = ceil_div(n, kKB), rs = src.rsk, lines = ceil_div(hb * d.dqk * 2, int64_t(64));
  const __m512 vscale = _mm512_set1_ps(p.scale);
  // (1) score = bf16(bf16(q·k) * scale), 16 keys x hb heads per block; next block prefetched.
  for (int64_t b = 0; b < nb; ++b) {
    if (b + 1 < nb)
      for (int j = 0; j < kKB; ++j)
        for (int64_t l = 0; l < lines; ++l)
          _mm_prefetch(reinterpret_cast<const char*>(k + sel[(b + 1) * kKB + j] * rs) + 64 * l,
                       _MM_HINT_T0);
    for (int64_t i = 0; i < hb; ++i) {
      const uint16_t* rows[kKB];
      for (int j = 0; j < kKB; ++j) rows[j] = k + sel[b * kKB + j] * rs + i * d.dqk;
      __m512 acc[kKB];
      for (int j = 0; j < kKB; ++j) acc[j] = _mm512_setzero_ps();
      const __m512i* qi = qb + i * d.NCq;
      for (int64_t c0 = 0; c0 < d.NCq; c0 += 6) {
        switch (std::min<int64_t>(6, d.NCq - c0)) {
          case 1: DotChunks<1>(d, qi, rows, c0, acc); break;
          case 2: DotChunks<2>(d, qi, rows, c0, acc); break;
          case 3: DotChunks<3>(d, qi, rows, c0, acc); break;
          case 4: DotChunks<4>(d, qi, rows, c0, acc); break;
          case 5: DotChunks<5>(d, qi, rows, c0, acc); break;
          default: DotChunks<6>(d, qi, rows, c0, acc); break;
        }
      }
      const __m512 dot = Reduce16(acc);
      _mm512_store_ps(sc + i * d.Kp + b * kKB, RoundBf16(_mm512_mul_ps(RoundBf16(dot), vscale)));
    }
  }
  // (2) softmax per head over the n real keys: fp32 max, exp(score - max), sum, p = bf16(e / sum).
  const __mmask16 mt = n % kKB == 0 ? __mmask16(0xffff) : __mmask16((1u << (n % kKB)) - 1);
  for (int64_t i = 0; i < hb; ++i) {
    float* si = sc + i * d.Kp;
    __m512 mx = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    for (int64_t b = 0; b < nb; ++b)
      mx = _mm512_mask_max_ps(mx, b + 1 < nb ? __mmask16(0xffff) : mt, mx, _mm512_load_ps(si + b * kKB));
    const __m512 vmx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const __m512 x = _mm512_sub_ps(_mm512_load_ps(si + b * kKB), vmx);
      const __m512 e = _mm512_maskz_mov_ps(b + 1 < nb ? __mmask16(0xffff) : mt, ExpNonPos(x));
      sum = _mm512_add_ps(sum, e);
      _mm512_store_ps(si + b * kKB, e);
    }
    const __m512 vsum = _mm512_set1_ps(_mm512_reduce_add_ps(sum));
    for (int64_t b = 0; b < nb; ++b)
      _mm256_store_si256(reinterpret_cast<__m256i*>(pb + i * d.Kp + b * kKB),
                         (__m256i)_mm512_cvtneps_pbh(_mm512_div_ps(_mm512_load_ps(si + b * kKB), vsum)));
  }
  // (3) o = bf16(Σ p v) for the hb heads (bf16 p pairs of consecutive keys).
  const uint32_t* p2 = reinterpret_cast<const uint32_t*>(pb);
  uint16_t* o = reinterpret_cast<uint16_t*>(p.o + (s * d.H + h0) * d.dv);
  for (int64_t i = 0; i < hb; i += 4) {  // sub-blocks of <= 4 heads (16 accumulators)
    const uint16_t* vi = v + i * d.dv;
    const uint32_t* pi = p2 + i * d.Kp / 2;
    switch (std::min<int64_t>(4, hb - i)) {
      case 1: Pv<1>(d, vi, src.rsv, sel, n, pi, o + i * d.dv); break;
      case 2: Pv<2>(d, vi, src.rsv, sel, n, pi, o + i * d.dv); break;
      case 3: Pv<3>(d, vi, src.rsv, sel, n, pi, o + i * d.dv); break;
      default: Pv<4>(d, vi, src.rsv, sel, n, pi, o + i * d.dv); break;
    }
  }
}

__mmask32 TailMask(int64_t len) {
  const int64_t r = len % 32;
  return r == 0 ? __mmask32(0xffffffffu) : __mmask32((1u << r) - 1);
}

}  // namespace

void sparse_mha_prefill_bf16(const SparseMhaPrefill& p) {
  Dims d{};
  d.H = p.H;
  d.dqk = p.d_qk;
  d.dv = p.d_v;
  d.NCq = ceil_div(p.d_qk, int64_t(32));
  d.NCv = ceil_div(p.d_v, int64_t(32));
  d.mq = TailMask(p.d_qk);
  d.mv = TailMask(p.d_v);
  // Kp: keys padded to whole score blocks, plus 8 for the P·V prefetch distance; even and a
  // multiple of 32 so every head's scratch row stays 64-byte aligned.
  d.Kp = ceil_div(p.K + 8, int64_t(32)) * 32;
  // Selected rows per query, compacted; padding repeats a valid row (its results are unused).
  std::vector<int32_t> sel(size_t(p.S * d.Kp));
  std::vector<int64_t> cnt(size_t(p.S));
  for (int64_t s = 0; s < p.S; ++s) {
    int32_t* row = sel.data() + s * d.Kp;
    int64_t n = 0;
    for (int64_t j = 0; j < p.K; ++j)
      if (p.idx[s * p.K + j] >= 0) row[n++] = p.idx[s * p.K + j];
    cnt[size_t(s)] = n;
    for (int64_t j = n; j < d.Kp; ++j) row[j] = n ? row[0] : 0;
  }
  // Items (block of kHB heads, query), block-major; one parallel_for per group of head blocks so
  // both threads share the group's K/V rows in cache. Every output row is computed by one thread
  // in a fixed order: bit-identical for any thread count.
  // When keys are reused (S·K >= 4·T), each head block's K/V rows are first packed into a dense
  // [T, hb, d] copy (at most 256 MiB): the queries' gathers then touch ~hb times fewer pages.
  const bool pack = p.S * p.K >= 4 * p.T && p.H > kHB &&
                    p.T * kHB * (p.d_qk + p.d_v) * 2 <= (int64_t(256) << 20);
  const int64_t nhb = ceil_div(p.H, kHB), gsz = pack ? 1 : std::max<int64_t>(1, ceil_div(int64_t(16), p.S));
  static thread_local Buf<uint16_t> s_pk, s_pv;  // of the calling thread
  uint16_t* pk = pack ? s_pk.get(size_t(p.T * kHB * p.d_qk)) : nullptr;
  uint16_t* pv = pack ? s_pv.get(size_t(p.T * kHB * p.d_v)) : nullptr;
  const uint16_t* k16 = reinterpret_cast<const uint16_t*>(p.k);
  const uint16_t* v16 = reinterpret_cast<const uint16_t*>(p.v);
  for (int64_t g0 = 0; g0 < nhb; g0 += gsz) {
    const int64_t g1 = std::min(nhb, g0 + gsz);
    Src src{k16 + g0 * kHB * p.d_qk, v16 + g0 * kHB * p.d_v, p.H * p.d_qk, p.H * p.d_v};
    if (pack) {  // one head block per group
      const int64_t h0 = g0 * kHB, hb = std::min(kHB, p.H - h0);
      parallel_for(p.T, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          std::memcpy(pk + t * hb * p.d_qk, k16 + (t * p.H + h0) * p.d_qk, size_t(hb * p.d_qk) * 2);
          std::memcpy(pv + t * hb * p.d_v, v16 + (t * p.H + h0) * p.d_v, size_t(hb * p.d_v) * 2);
        }
      });
      src = Src{pk, pv, hb * p.d_qk, hb * p.d_v};
    }
    parallel_for((g1 - g0) * p.S, [&](int64_t i0, int64_t i1) {
      static thread_local Buf<uint16_t> s_q, s_pb;
      static thread_local Buf<float> s_sc;
      __m512i* qb = reinterpret_cast<__m512i*>(s_q.get(size_t(kHB * 32 * d.NCq)));
      float* sc = s_sc.get(size_t(kHB * d.Kp));
      uint16_t* pb = s_pb.get(size_t(kHB * d.Kp));
      for (int64_t it = i0; it < i1; ++it) {
        const int64_t g = g0 + it / p.S, h0 = g * kHB, s = it % p.S, n = cnt[size_t(s)];
        const int64_t hb = std::min(kHB, p.H - h0);
        if (n == 0) {
          std::fill(p.o + (s * p.H + h0) * p.d_v, p.o + (s * p.H + h0 + hb) * p.d_v, bf16{});
          continue;
        }
        Src si = src;
        if (!pack) {
          si.k = k16 + h0 * p.d_qk;
          si.v = v16 + h0 * p.d_v;
        }
        Item(p, d, si, sel.data() + s * d.Kp, n, s, h0, hb, qb, sc, pb);
      }
    });
  }
}

}  // namespace dsa::ops::cpu
