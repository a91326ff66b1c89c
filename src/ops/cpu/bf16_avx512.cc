// AVX512-BF16 indexer logits and FP8 GEMV (decode shapes): FP8 decoded to bf16 (exact) by VBMI
// table lookups, dot products by vdpbf16ps with fp32 accumulation; see bf16_avx512.h.
// GCC 12 flags its own _mm512_undefined_* inside max/reduce intrinsics (false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include "ops/cpu/bf16_avx512.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "base/numeric.h"
#include "base/thread_pool.h"
#include "hwy/aligned_allocator.h"
#include "ops/cpu/bf16_util.h"

namespace dsa::ops::cpu {

bool bf16_dot_available() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vbmi") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  }();
  return ok;
#else
  return false;
#endif
}

namespace bf16k {
const Fp8Tables& fp8_tables() {
  static const Fp8Tables t = [] {
    Fp8Tables r{};
    for (int c = 0; c < 128; ++c) {
      const uint16_t b = c == 0x7f ? uint16_t(0x7fc0) : f32_to_bf16(kFp8Table[size_t(c)]).bits;
      r.lo[c] = uint8_t(b & 0xff);
      r.hi[c] = uint8_t(b >> 8);
    }
    return r;
  }();
  return t;
}
}  // namespace bf16k

using namespace bf16k;

namespace {

// Decodes n fp8 bytes (zero-padded to np, a multiple of 64) into np bf16 in unpack order.
DSA_BF16_TARGET void decode_row(const Dec& t, const uint8_t* src, int64_t n, int64_t np,
                                uint8_t* pad, __m512i* dst) {
  if (n != np) {
    std::memcpy(pad, src, size_t(n));
    std::memset(pad + n, 0, size_t(np - n));
    src = pad;
  }
  for (int64_t c = 0; c < np / 64; ++c)
    Dec64(t, _mm512_loadu_si512(src + 64 * c), dst[2 * c], dst[2 * c + 1]);
}

// ---- indexer: items = (query t, tile of 32 keys). The tile is decoded to bf16 and stored
// pair-major (kT[p][j] = key j's bf16 pair p) so lanes run over keys; q pairs are broadcast.
// Per lane the dot sums 2-product pairs in increasing p; heads are summed in increasing h with
// the reference's mul-then-add, so every key's result is independent of its tile and thread.
constexpr int64_t kTK = 32;

template <int HB>
DSA_BF16_TARGET __attribute__((always_inline)) inline void IndexerHeads(
    const uint32_t* q2, int64_t P, const uint32_t* kT, const float* w, __m512& sum0,
    __m512& sum1) {
  __m512 a0[HB], a1[HB];
  for (int i = 0; i < HB; ++i) a0[i] = a1[i] = _mm512_setzero_ps();
  for (int64_t pp = 0; pp < P; ++pp) {
    const __m512i k0 = _mm512_load_si512(kT + pp * kTK), k1 = _mm512_load_si512(kT + pp * kTK + 16);
    for (int i = 0; i < HB; ++i) {
      const __m512i qb = _mm512_set1_epi32(int(q2[i * P + pp]));
      a0[i] = Dp(a0[i], qb, k0);
      a1[i] = Dp(a1[i], qb, k1);
    }
  }
  const __m512 zero = _mm512_setzero_ps();
  for (int i = 0; i < HB; ++i) {
    const __m512 wv = _mm512_set1_ps(w[i]);
    sum0 = _mm512_add_ps(sum0, _mm512_mul_ps(wv, _mm512_max_ps(a0[i], zero)));
    sum1 = _mm512_add_ps(sum1, _mm512_mul_ps(wv, _mm512_max_ps(a1[i], zero)));
  }
}

DSA_BF16_TARGET void IndexerWorker(const IndexerLogits& p, int64_t i0, int64_t i1) {
  const IndexPages& kp = p.k;
  const int64_t H = p.H, D = kp.D, Dp = ceil_div(D, 64) * 64, P = Dp / 2;
  const int64_t tpr = ceil_div(p.N, kTK);
  const float ninf = -std::numeric_limits<float>::infinity();
  const Dec t = LoadDec();
  auto q2 = hwy::AllocateAligned<uint32_t>(size_t(H * P));
  auto kT = hwy::AllocateAligned<uint32_t>(size_t(P * kTK));
  auto row = hwy::AllocateAligned<uint32_t>(size_t(P));
  auto pad = hwy::AllocateAligned<uint8_t>(size_t(Dp));
  alignas(64) float ks[kTK], res[kTK];
  int64_t cur_t = -1;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t tq = i / tpr, s0 = (i % tpr) * kTK, e = p.end[tq];
    float* out = p.out + tq * p.N;
    const int64_t s_hi = std::min<int64_t>(p.N, s0 + kTK);
    if (s0 >= e) {
      std::fill(out + s0, out + s_hi, ninf);
      continue;
    }
    if (tq != cur_t) {
      for (int64_t h = 0; h < H; ++h)
        decode_row(t, p.q + (tq * H + h) * D, D, Dp, pad.get(),
                   reinterpret_cast<__m512i*>(q2.get() + h * P));
      cur_t = tq;
    }
    const int32_t* bt = kp.block_table + tq * kp.bt_stride;
    const int64_t ns = std::min<int64_t>(kTK, e - s0);
    for (int64_t j = 0; j < kTK; ++j) {
      if (j < ns) {
        const int64_t s = s0 + j, slot = s % kp.page_size;
        const uint8_t* base = kp.pool + int64_t(bt[s / kp.page_size]) * kp.page_bytes();
        std::memcpy(&ks[j], base + kp.page_size * D + 4 * slot, 4);
        decode_row(t, base + slot * D, D, Dp, pad.get(), reinterpret_cast<__m512i*>(row.get()));
        for (int64_t pp = 0; pp < P; ++pp) kT[size_t(pp * kTK + j)] = row[size_t(pp)];
      } else {
        ks[j] = 0.0f;
        for (int64_t pp = 0; pp < P; ++pp) kT[size_t(pp * kTK + j)] = 0;
      }
    }
    __m512 sum0 = _mm512_setzero_ps(), sum1 = sum0;
    const float* w = p.w + tq * H;
    int64_t h = 0;
    for (; h + 8 <= H; h += 8) IndexerHeads<8>(q2.get() + h * P, P, kT.get(), w + h, sum0, sum1);
    for (; h < H; ++h) IndexerHeads<1>(q2.get() + h * P, P, kT.get(), w + h, sum0, sum1);
    _mm512_store_ps(res, _mm512_mul_ps(sum0, _mm512_load_ps(ks)));
    _mm512_store_ps(res + 16, _mm512_mul_ps(sum1, _mm512_load_ps(ks + 16)));
    for (int64_t j = 0; j < s_hi - s0; ++j) out[s0 + j] = j < ns ? res[j] : ninf;
  }
}

// ---- FP8 GEMM (every M): a decoded once to bf16; R weight rows per pass streamed once (with
// prefetch), each 128-block decoded once and dotted with up to 4 activation rows. The reference's
// structure exactly: each block's dot (4 chained vdpbf16ps, then one fixed-order 16-lane
// reduction) is multiplied by a_s*w_s and added to the output's fp32 sum in increasing kb (no
// FMA). Only the order inside a block's dot differs from the reference, so an output's bf16
// rounding rarely changes; scaling lane partials and reducing once at the end was cheaper but
// flipped enough bf16 outputs to move FP8 re-quantisation downstream (golden test).
constexpr int64_t kPrefetch = 1024;  // bytes ahead in each weight row

template <int MT, int R>
DSA_BF16_TARGET __attribute__((always_inline)) inline void GemvRows(
    const Fp8Gemm& p, const __m512i* a2, int64_t m0, int64_t n0, int64_t nr, const uint8_t* zeros,
    uint8_t* pad) {
  const Dec t = LoadDec();
  const int64_t nb = ceil_div(p.K, kBlock), vpr = nb * 4;  // bf16 vectors per a row
  float acc[MT][R];
  for (int i = 0; i < MT; ++i)
    for (int r = 0; r < R; ++r) acc[i][r] = 0.0f;
  const uint8_t* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = r < nr ? p.w + (n0 + r) * p.K : nullptr;
  for (int64_t kb = 0; kb < nb; ++kb) {
    const int64_t k0 = kb * kBlock, kl = std::min<int64_t>(kBlock, p.K - k0);
    __m512i av[MT][4];
    float as[MT];
    for (int i = 0; i < MT; ++i) {
      for (int v = 0; v < 4; ++v) av[i][v] = _mm512_load_si512(a2 + (m0 + i) * vpr + kb * 4 + v);
      as[i] = p.a_s[(m0 + i) * nb + kb];
    }
    for (int r = 0; r < R; ++r) {
      const uint8_t* src = zeros;
      float ws = 0.0f;
      if (r < nr) {
        src = rows[r] + k0;
        _mm_prefetch(reinterpret_cast<const char*>(src + kPrefetch), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(src + kPrefetch + 64), _MM_HINT_T0);
        if (kl < kBlock) {
          std::memcpy(pad, src, size_t(kl));
          std::memset(pad + kl, 0, size_t(kBlock - kl));
          src = pad;
        }
        ws = p.w_s[((n0 + r) / kBlock) * nb + kb];
      }
      __m512i wv[4];
      Dec64(t, _mm512_loadu_si512(src), wv[0], wv[1]);
      Dec64(t, _mm512_loadu_si512(src + 64), wv[2], wv[3]);
      for (int i = 0; i < MT; ++i) {
        __m512 d = Dp(_mm512_setzero_ps(), av[i][0], wv[0]);
        d = Dp(d, av[i][1], wv[1]);
        d = Dp(d, av[i][2], wv[2]);
        d = Dp(d, av[i][3], wv[3]);
        const float scale = as[i] * ws, part = _mm512_reduce_add_ps(d) * scale;
        acc[i][r] = acc[i][r] + part;
      }
    }
  }
  for (int i = 0; i < MT; ++i)
    for (int r = 0; r < nr; ++r)
      p.y[(m0 + i) * p.ldy + n0 + r] = f32_to_bf16(acc[i][r]);
}

template <int R>
DSA_BF16_TARGET void GemvGroups(const Fp8Gemm& p, const __m512i* a2, int64_t g0, int64_t g1) {
  alignas(64) static const uint8_t zeros[kBlock] = {};
  alignas(64) uint8_t pad[kBlock];
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t n0 = g * R, nr = std::min<int64_t>(R, p.N - n0);
    if constexpr (R == 8) {
      for (int64_t m = 0; m < p.M; ++m) GemvRows<1, 8>(p, a2, m, n0, nr, zeros, pad);
    } else {
      for (int64_t m0 = 0; m0 < p.M;) {
        const int64_t rem = p.M - m0;
        if (rem >= 4) GemvRows<4, R>(p, a2, m0, n0, nr, zeros, pad);
        else if (rem >= 2) GemvRows<2, R>(p, a2, m0, n0, nr, zeros, pad);
        else GemvRows<1, R>(p, a2, m0, n0, nr, zeros, pad);
        m0 += rem >= 4 ? 4 : (rem >= 2 ? 2 : 1);
      }
    }
  }
}

DSA_BF16_TARGET void DecodeActs(const Fp8Gemm& p, __m512i* a2) {
  const Dec t = LoadDec();
  const int64_t nb = ceil_div(p.K, kBlock), Kp = nb * kBlock;
  alignas(64) uint8_t pad[kBlock];
  for (int64_t m = 0; m < p.M; ++m)
    for (int64_t kb = 0; kb < nb; ++kb) {
      const int64_t k0 = kb * kBlock, kl = std::min<int64_t>(kBlock, p.K - k0);
      decode_row(t, p.a + m * p.K + k0, kl, kBlock, pad, a2 + (m * Kp + k0) / 32);
    }
}

}  // namespace

void indexer_logits_bf16(const IndexerLogits& p) {
  const int64_t tpr = ceil_div(p.N, kTK);
  parallel_for(p.S * tpr, [&](int64_t i0, int64_t i1) { IndexerWorker(p, i0, i1); });
}

void fp8_gemv_bf16(const Fp8Gemm& p) {
  const int64_t Kp = ceil_div(p.K, kBlock) * kBlock;
  auto a2 = hwy::AllocateAligned<uint16_t>(size_t(p.M * Kp));
  __m512i* av = reinterpret_cast<__m512i*>(a2.get());
  DecodeActs(p, av);
  // Rows per pass: 8 when the rows of a pass share one activation row, else 4 (register budget).
  // The grouping only decides which outputs a pass computes; each output's arithmetic is fixed.
  if (p.M == 1)
    parallel_for(ceil_div(p.N, 8), [&](int64_t g0, int64_t g1) { GemvGroups<8>(p, av, g0, g1); });
  else
    parallel_for(ceil_div(p.N, 4), [&](int64_t g0, int64_t g1) { GemvGroups<4>(p, av, g0, g1); });
}

}  // namespace dsa::ops::cpu
