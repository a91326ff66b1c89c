// AVX512-BF16 sparse MLA decode (spec §6.2): gathered latent rows dequantised once to bf16
// (exact), scores and P·V by vdpbf16ps with fp32 accumulation, lanes over heads resp. dims.
// GCC 12 flags its own _mm512_undefined_* inside max/reduce intrinsics (false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <algorithm>
#include <cmath>
#include <cstring>
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


constexpr int64_t kKB = 6;  // keys per score block (6 keys x 64 heads = 24 accumulators)

struct Dims {
  int64_t Lr, R, H, Lw, Rq, RW, P1, P2, Hp, n, nK, nq;
};

// One gathered row -> bf16 [Lw latent (fp8 * scale, exact) | Rq rope], zero-padded.
DSA_BF16_TARGET void DecodeLatent(const SparseMlaDecode& p, const Dims& d, const uint8_t* row,
                                  uint16_t* dst) {
  std::memset(dst, 0, size_t(d.RW) * 2);
  if (!row) return;
  const int64_t nb = ceil_div(d.Lr, kBlock);
  for (int64_t b = 0; b < nb; ++b) {
    float scl;
    std::memcpy(&scl, row + p.layout.scale_off() + 4 * b, 4);
    const int64_t i1 = std::min(d.Lr, (b + 1) * kBlock);
    int64_t i = b * kBlock;
    const __m512 vs = _mm512_set1_ps(scl * 0x1p8f);  // power of two: exact
    for (; i + 16 <= i1; i += 16) {
      const __m256bh v = _mm512_cvtneps_pbh(_mm512_mul_ps(Fp8x16Div256(row + i), vs));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), (__m256i)v);
    }
    for (; i < i1; ++i) dst[i] = f32_to_bf16(kFp8Table[row[i]] * scl).bits;
  }
  std::memcpy(dst + d.Lw, row + p.layout.rope_off(), size_t(d.R) * 2);
}

// Scores of KB keys x 64 heads (group g): lanes over heads, q pairs loaded, key pairs broadcast;
// per lane the pair sums run in increasing dim. score = bf16(bf16(bf16(d1)+bf16(d2))*scale).
template <int KB>
DSA_BF16_TARGET void ScoreBlock(
    const Dims& d, const uint32_t* qa2, const uint32_t* qr2, const uint32_t* cb, int64_t j0,
    int64_t g, float scale, float* sc) {
  __m512 a[KB][4];
  __m512 d1[KB][4];
  const int64_t rw2 = d.RW / 2, h0 = g * 64;
  for (int j = 0; j < KB; ++j)
    for (int v = 0; v < 4; ++v) a[j][v] = _mm512_setzero_ps();
  for (int64_t pp = 0; pp < d.P1; ++pp) {
    const uint32_t* q = qa2 + pp * d.Hp + h0;
    const __m512i q0 = _mm512_load_si512(q), q1 = _mm512_load_si512(q + 16);
    const __m512i q2 = _mm512_load_si512(q + 32), q3 = _mm512_load_si512(q + 48);
    for (int j = 0; j < KB; ++j) {
      const __m512i k = _mm512_set1_epi32(int(cb[(j0 + j) * rw2 + pp]));
      a[j][0] = Dp(a[j][0], q0, k);
      a[j][1] = Dp(a[j][1], q1, k);
      a[j][2] = Dp(a[j][2], q2, k);
      a[j][3] = Dp(a[j][3], q3, k);
    }
  }
  for (int j = 0; j < KB; ++j)
    for (int v = 0; v < 4; ++v) {
      d1[j][v] = RoundBf16(a[j][v]);
      a[j][v] = _mm512_setzero_ps();
    }
  for (int64_t pp = 0; pp < d.P2; ++pp) {
    const uint32_t* q = qr2 + pp * d.Hp + h0;
    for (int j = 0; j < KB; ++j) {
      const __m512i k = _mm512_set1_epi32(int(cb[(j0 + j) * rw2 + d.P1 + pp]));
      for (int v = 0; v < 4; ++v) a[j][v] = Dp(a[j][v], _mm512_load_si512(q + 16 * v), k);
    }
  }
  const __m512 vs = _mm512_set1_ps(scale);
  for (int j = 0; j < KB; ++j)
    for (int v = 0; v < 4; ++v) {
      const __m512 s = RoundBf16(_mm512_add_ps(d1[j][v], RoundBf16(a[j][v])));
      _mm512_store_ps(sc + (j0 + j) * d.Hp + h0 + 16 * v, RoundBf16(_mm512_mul_ps(s, vs)));
    }
}

// Softmax over the n keys of 16 heads (lanes), per head the reference's fp32 steps: max, exp of
// score - max (vector exp, see ExpNonPos), sum in increasing key order, p = bf16(e / sum).
// Writes bf16 pairs of consecutive keys to p2[h][j/2] (zero for the padding key).
DSA_BF16_TARGET void SoftmaxHeads(const Dims& d, float* sc, int64_t hv, uint32_t* p2) {
  const int64_t h0 = hv * 16;
  __m512 mx = _mm512_load_ps(sc + h0);
  for (int64_t j = 1; j < d.n; ++j) mx = _mm512_max_ps(mx, _mm512_load_ps(sc + j * d.Hp + h0));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < d.n; ++j) {
    float* row = sc + j * d.Hp + h0;
    const __m512 e = ExpNonPos(_mm512_sub_ps(_mm512_load_ps(row), mx));
    sum = _mm512_add_ps(sum, e);
    _mm512_store_ps(row, e);
  }
  alignas(64) uint32_t b[16];
  for (int64_t q = 0; q < d.nq; ++q) {
    const __m512 e0 = _mm512_load_ps(sc + 2 * q * d.Hp + h0);
    const __m512 e1 = 2 * q + 1 < d.n ? _mm512_load_ps(sc + (2 * q + 1) * d.Hp + h0) : _mm512_setzero_ps();
    const __m512i b0 = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_div_ps(e0, sum)));
    const __m512i b1 = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_div_ps(e1, sum)));
    _mm512_store_si512(b, _mm512_or_si512(b0, _mm512_slli_epi32(b1, 16)));
    for (int l = 0; l < 16; ++l) p2[(h0 + l) * d.nq + q] = b[l];
  }
}

// o[h0:h0+8, d0:d0+32] = Σ_j p[h, j] c[j, :]: lanes over dims, pairs of keys per vdpbf16ps in
// increasing key order; stored as bf16 (RNE) for h < H, dim < Lr.
DSA_BF16_TARGET void PvBlock(const SparseMlaDecode& p, const Dims& d, const uint32_t* p2,
                             const uint32_t* cI, int64_t Lq, int64_t h0, int64_t d0, bf16* o) {
  __m512 a0[8], a1[8];
  for (int i = 0; i < 8; ++i) a0[i] = a1[i] = _mm512_setzero_ps();
  for (int64_t q = 0; q < d.nq; ++q) {
    const __m512i c0 = _mm512_load_si512(cI + q * Lq + d0), c1 = _mm512_load_si512(cI + q * Lq + d0 + 16);
    for (int i = 0; i < 8; ++i) {
      const __m512i pb = _mm512_set1_epi32(int(p2[(h0 + i) * d.nq + q]));
      a0[i] = Dp(a0[i], pb, c0);
      a1[i] = Dp(a1[i], pb, c1);
    }
  }
  const int64_t nd = std::min<int64_t>(32, d.Lr - d0);
  const __mmask16 m0 = nd >= 16 ? __mmask16(0xffff) : __mmask16((1u << nd) - 1);
  const __mmask16 m1 = nd >= 32 ? __mmask16(0xffff) : nd <= 16 ? 0 : __mmask16((1u << (nd - 16)) - 1);
  for (int i = 0; i < 8 && h0 + i < d.H; ++i) {
    uint16_t* dst = reinterpret_cast<uint16_t*>(o + (h0 + i) * d.Lr + d0);
    _mm256_mask_storeu_epi16(dst, m0, (__m256i)_mm512_cvtneps_pbh(a0[i]));
    if (m1) _mm256_mask_storeu_epi16(dst + 16, m1, (__m256i)_mm512_cvtneps_pbh(a1[i]));
  }
}

// q rows -> pair-major, head-minor: dst[pp][h] = (x[h][2pp], x[h][2pp+1]) for h < H, dims < len.
void TransposeQ(const bf16* x, int64_t H, int64_t len, int64_t P, int64_t Hp, uint32_t* dst) {
  std::memset(dst, 0, size_t(P * Hp) * 4);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < len; ++i)
      dst[(i / 2) * Hp + h] |= uint32_t(x[h * len + i].bits) << (16 * (i & 1));
}

}  // namespace

void sparse_mla_decode_bf16(const SparseMlaDecode& p) {
  static thread_local Buf<uint16_t> s_cb;
  static thread_local Buf<uint32_t> s_cI, s_qa, s_qr, s_p2;
  static thread_local Buf<float> s_sc;
  Dims d{};
  d.Lr = p.layout.kv_lora;
  d.R = p.layout.rope;
  d.H = p.H;
  d.Lw = ceil_div(d.Lr, 32) * 32;
  d.Rq = ceil_div(d.R, 2) * 2;
  d.RW = d.Lw + d.Rq;
  d.P1 = d.Lw / 2;
  d.P2 = d.Rq / 2;
  d.Hp = ceil_div(d.H, 64) * 64;
  const int64_t Lq = d.Lw, row_bytes = p.layout.row_bytes();
  std::vector<int32_t> sel;
  for (int64_t s = 0; s < p.S; ++s) {
    sel.clear();
    for (int64_t j = 0; j < p.K; ++j)
      if (p.idx[s * p.K + j] >= 0) sel.push_back(p.idx[s * p.K + j]);
    d.n = int64_t(sel.size());
    bf16* o = p.o_lat + s * d.H * d.Lr;
    if (d.n == 0) {
      std::fill(o, o + d.H * d.Lr, bf16{});
      continue;
    }
    d.nK = ceil_div(d.n, kKB) * kKB;
    d.nq = ceil_div(d.n, 2);
    uint16_t* cb = s_cb.get(size_t(d.nK * d.RW));
    uint32_t* cI = s_cI.get(size_t(d.nq * Lq));
    uint32_t* qa2 = s_qa.get(size_t(d.P1 * d.Hp));
    uint32_t* qr2 = s_qr.get(size_t(std::max<int64_t>(d.P2, 1) * d.Hp));
    float* sc = s_sc.get(size_t(d.nK * d.Hp));
    uint32_t* p2 = s_p2.get(size_t(d.Hp * d.nq));
    // (1) gather + dequantise each row once; pairs of rows interleaved for P·V.
    parallel_for(d.nK / 2, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        for (int64_t j = 2 * q; j < 2 * q + 2; ++j)
          DecodeLatent(p, d, j < d.n ? p.cache + int64_t(sel[size_t(j)]) * row_bytes : nullptr,
                       cb + j * d.RW);
        if (q >= d.nq) continue;
        const uint16_t *ra = cb + 2 * q * d.RW, *rb = ra + d.RW;
        for (int64_t i = 0; i < Lq; ++i) cI[q * Lq + i] = uint32_t(ra[i]) | uint32_t(rb[i]) << 16;
      }
    });
    TransposeQ(p.q_abs + s * d.H * d.Lr, d.H, d.Lr, d.P1, d.Hp, qa2);
    if (d.R > 0) TransposeQ(p.q_pe + s * d.H * d.R, d.H, d.R, d.P2, d.Hp, qr2);
    // (2) scores, items = (block of 6 keys, group of 64 heads).
    const int64_t ng = d.Hp / 64, nkb = d.nK / kKB;
    const uint32_t* cb32 = reinterpret_cast<const uint32_t*>(cb);
    parallel_for(nkb * ng, [&](int64_t i0, int64_t i1) {
      for (int64_t it = i0; it < i1; ++it)
        ScoreBlock<kKB>(d, qa2, qr2, cb32, (it / ng) * kKB, it % ng, p.scale, sc);
    });
    // (3) softmax per 16 heads.
    parallel_for(ceil_div(d.H, 16), [&](int64_t v0, int64_t v1) {
      for (int64_t hv = v0; hv < v1; ++hv) SoftmaxHeads(d, sc, hv, p2);
    });
    // (4) o = bf16(Σ p c), items = (8 heads, 32 dims).
    const int64_t nhb = ceil_div(d.H, 8), ndb = Lq / 32;
    parallel_for(nhb * ndb, [&](int64_t i0, int64_t i1) {
      for (int64_t it = i0; it < i1; ++it) PvBlock(p, d, p2, cI, Lq, (it / ndb) * 8, (it % ndb) * 32, o);
    });
  }
}

}  // namespace dsa::ops::cpu
