// Reference sparse attention: MHA-mode prefill (spec §6.1), absorbed MLA decode (spec §6.2) and
// the per-head bf16 matmul of the absorbed path.
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/ref/ref_util.h"

namespace dsa::ops::ref {

void softmax_bf16(float* score, int64_t n) {
  if (n <= 0) return;
  float mx = score[0];
  for (int64_t j = 1; j < n; ++j) mx = std::max(mx, score[j]);
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    score[j] = std::exp(score[j] - mx);
    sum += score[j];
  }
  for (int64_t j = 0; j < n; ++j) score[j] = round_bf16(score[j] / sum);
}

void sparse_mha_prefill(const SparseMhaPrefill& p) {
  check(p);
  std::vector<int32_t> sel;
  std::vector<float> score, qf(size_t(p.d_qk)), acc(size_t(p.d_v));
  for (int64_t s = 0; s < p.S; ++s) {
    sel.clear();
    for (int64_t j = 0; j < p.K; ++j) {
      const int32_t t = p.idx[s * p.K + j];
      if (t < 0) continue;
      sel.push_back(t);
    }
    score.resize(sel.size());
    for (int64_t h = 0; h < p.H; ++h) {
      const bf16* q = p.q + (s * p.H + h) * p.d_qk;
      for (int64_t d = 0; d < p.d_qk; ++d) qf[size_t(d)] = ld(q[d]);
      for (size_t j = 0; j < sel.size(); ++j) {
        const bf16* k = p.k + (int64_t(sel[j]) * p.H + h) * p.d_qk;
        float dot = 0.0f;
        for (int64_t d = 0; d < p.d_qk; ++d) dot += qf[size_t(d)] * ld(k[d]);
        score[j] = round_bf16(round_bf16(dot) * p.scale);
      }
      softmax_bf16(score.data(), int64_t(score.size()));
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (size_t j = 0; j < sel.size(); ++j) {
        const bf16* v = p.v + (int64_t(sel[j]) * p.H + h) * p.d_v;
        for (int64_t d = 0; d < p.d_v; ++d) acc[size_t(d)] += score[j] * ld(v[d]);
      }
      bf16* o = p.o + (s * p.H + h) * p.d_v;
      for (int64_t d = 0; d < p.d_v; ++d) o[d] = st(acc[size_t(d)]);
    }
  }
}

void sparse_mla_decode(const SparseMlaDecode& p) {
  const int64_t L = p.layout.kv_lora, R = p.layout.rope;
  check(p);
  const int64_t row_bytes = p.layout.row_bytes(), nb = ceil_div(L, kBlock);
  std::vector<int32_t> sel;
  std::vector<float> c, pe, score, qa(static_cast<size_t>(L)), qp(static_cast<size_t>(R)),
      acc(static_cast<size_t>(L));
  for (int64_t s = 0; s < p.S; ++s) {
    sel.clear();
    for (int64_t j = 0; j < p.K; ++j) {
      const int32_t t = p.idx[s * p.K + j];
      if (t < 0) continue;
      sel.push_back(t);
    }
    // Dequantise the selected latent rows once for all heads.
    c.resize(sel.size() * size_t(L));
    pe.resize(sel.size() * size_t(R));
    for (size_t j = 0; j < sel.size(); ++j) {
      const uint8_t* row = p.cache + int64_t(sel[j]) * row_bytes;
      for (int64_t b = 0; b < nb; ++b) {
        float sc;
        std::memcpy(&sc, row + p.layout.scale_off() + 4 * b, 4);
        for (int64_t i = b * kBlock; i < std::min(L, (b + 1) * kBlock); ++i)
          c[j * size_t(L) + size_t(i)] = kFp8Table[row[i]] * sc;
      }
      for (int64_t i = 0; i < R; ++i) {
        bf16 v;
        std::memcpy(&v.bits, row + p.layout.rope_off() + 2 * i, 2);
        pe[j * size_t(R) + size_t(i)] = ld(v);
      }
    }
    score.resize(sel.size());
    for (int64_t h = 0; h < p.H; ++h) {
      const bf16* q1 = p.q_abs + (s * p.H + h) * L;
      for (int64_t i = 0; i < L; ++i) qa[size_t(i)] = ld(q1[i]);
      for (int64_t i = 0; i < R; ++i) qp[size_t(i)] = ld(p.q_pe[(s * p.H + h) * R + i]);
      for (size_t j = 0; j < sel.size(); ++j) {
        const float* cj = c.data() + j * size_t(L);
        const float* pj = pe.data() + j * size_t(R);
        float d1 = 0.0f, d2 = 0.0f;
        for (int64_t i = 0; i < L; ++i) d1 += qa[size_t(i)] * cj[i];
        for (int64_t i = 0; i < R; ++i) d2 += qp[size_t(i)] * pj[i];
        score[j] = round_bf16(round_bf16(round_bf16(d1) + round_bf16(d2)) * p.scale);
      }
      softmax_bf16(score.data(), int64_t(score.size()));
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (size_t j = 0; j < sel.size(); ++j) {
        const float* cj = c.data() + j * size_t(L);
        for (int64_t i = 0; i < L; ++i) acc[size_t(i)] += score[j] * cj[i];
      }
      bf16* o = p.o_lat + (s * p.H + h) * L;
      for (int64_t i = 0; i < L; ++i) o[i] = st(acc[size_t(i)]);
    }
  }
}

void head_matmul(const HeadMatmul& p) {
  check(p);
  std::vector<float> acc(size_t(p.N));
  for (int64_t s = 0; s < p.S; ++s) {
    for (int64_t h = 0; h < p.H; ++h) {
      const bf16* x = p.x + s * p.x_s_stride + h * p.x_h_stride;
      const bf16* w = p.w + h * p.w_head_stride;
      std::fill(acc.begin(), acc.end(), 0.0f);
      if (p.trans_w) {
        for (int64_t n = 0; n < p.N; ++n) {
          const bf16* wn = w + n * p.w_row_stride;
          float a = 0.0f;
          for (int64_t k = 0; k < p.K; ++k) a += ld(x[k]) * ld(wn[k]);
          acc[size_t(n)] = a;
        }
      } else {
        for (int64_t k = 0; k < p.K; ++k) {
          const float xk = ld(x[k]);
          const bf16* wk = w + k * p.w_row_stride;
          for (int64_t n = 0; n < p.N; ++n) acc[size_t(n)] += xk * ld(wk[n]);
        }
      }
      bf16* y = p.y + (s * p.H + h) * p.N;
      for (int64_t n = 0; n < p.N; ++n) y[n] = st(acc[size_t(n)]);
    }
  }
}

}  // namespace dsa::ops::ref
