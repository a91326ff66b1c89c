// Reference backward of the absorbed sparse MLA attention (ops/grad.h SparseMlaBwdQ/Kv):
// phase 1 per query row and head (probabilities recomputed exactly as the forward rounds them),
// phase 2 per key over the slots that selected it, so no scatter races and a fixed order.
#include <cmath>
#include <vector>

#include "ops/grad.h"
#include "ops/ref/ref_util.h"

namespace dsa::ops::ref {

void dequant_latent_row(const uint8_t* row, const LatentLayout& lay, float* c, float* pe) {
  const int64_t L = lay.kv_lora, nb = ceil_div(L, kBlock);
  for (int64_t b = 0; b < nb; ++b) {
    float sc;
    std::memcpy(&sc, row + lay.scale_off() + 4 * b, 4);
    for (int64_t i = b * kBlock; i < std::min(L, (b + 1) * kBlock); ++i) c[i] = kFp8Table[row[i]] * sc;
  }
  for (int64_t i = 0; i < lay.rope; ++i) {
    bf16 v;
    std::memcpy(&v.bits, row + lay.rope_off() + 2 * i, 2);
    pe[i] = ld(v);
  }
}

void sparse_mla_bwd_q(const SparseMlaBwdQ& p) {
  const int64_t L = p.layout.kv_lora, R = p.layout.rope, rb = p.layout.row_bytes();
  DSA_CHECK(p.S >= 0 && p.H > 0 && p.K > 0 && L > 0, "sparse_mla_bwd_q: bad shape");
  std::vector<int64_t> slot;
  std::vector<float> c, pe, score, qa(static_cast<size_t>(L)), qp(static_cast<size_t>(R));
  std::vector<double> dp;
  for (int64_t s = 0; s < p.S; ++s) {
    slot.clear();
    for (int64_t j = 0; j < p.K; ++j) {
      const int32_t t = p.idx[s * p.K + j];
      if (t < 0) continue;
      DSA_CHECK(t < p.N, "sparse_mla_bwd_q: row {} outside the cache ({} rows)", t, p.N);
      slot.push_back(j);
    }
    const size_t n = slot.size();
    c.resize(n * size_t(L));
    pe.resize(n * size_t(R));
    for (size_t j = 0; j < n; ++j)
      dequant_latent_row(p.cache + int64_t(p.idx[s * p.K + slot[j]]) * rb, p.layout, c.data() + j * L,
                         pe.data() + j * R);
    score.resize(n);
    dp.resize(n);
    for (int64_t h = 0; h < p.H; ++h) {
      const int64_t sh = s * p.H + h;
      for (int64_t i = 0; i < L; ++i) qa[size_t(i)] = ld(p.q_abs[sh * L + i]);
      for (int64_t i = 0; i < R; ++i) qp[size_t(i)] = ld(p.q_pe[sh * R + i]);
      // The forward's probabilities, with its rounding points (ref::sparse_mla_decode).
      for (size_t j = 0; j < n; ++j) {
        float d1 = 0.0f, d2 = 0.0f;
        for (int64_t i = 0; i < L; ++i) d1 += qa[size_t(i)] * c[j * L + i];
        for (int64_t i = 0; i < R; ++i) d2 += qp[size_t(i)] * pe[j * R + i];
        score[j] = round_bf16(round_bf16(round_bf16(d1) + round_bf16(d2)) * p.scale);
      }
      softmax_bf16(score.data(), int64_t(n));
      const float* dov = p.d_o + sh * L;
      double D = 0.0;
      for (size_t j = 0; j < n; ++j) {
        double a = 0.0;
        for (int64_t i = 0; i < L; ++i) a += double(dov[i]) * c[j * L + i];
        dp[j] = a;
        D += double(score[j]) * a;
      }
      float* P = p.P + sh * p.K;
      float* G = p.G + sh * p.K;
      std::fill(P, P + p.K, 0.0f);
      std::fill(G, G + p.K, 0.0f);
      std::vector<double> dqa(size_t(L), 0.0), dqp(size_t(R), 0.0);
      for (size_t j = 0; j < n; ++j) {
        const double g = double(p.scale) * double(score[j]) * (dp[j] - D);
        P[slot[j]] = score[j];
        G[slot[j]] = float(g);
        for (int64_t i = 0; i < L; ++i) dqa[size_t(i)] += g * c[j * L + i];
        for (int64_t i = 0; i < R; ++i) dqp[size_t(i)] += g * pe[j * R + i];
      }
      for (int64_t i = 0; i < L; ++i) p.d_q_abs[sh * L + i] = float(dqa[size_t(i)]);
      for (int64_t i = 0; i < R; ++i) p.d_q_pe[sh * R + i] = float(dqp[size_t(i)]);
    }
  }
}

void sparse_mla_bwd_kv(const SparseMlaBwdKv& p) {
  const int64_t L = p.L, R = p.R;
  std::vector<double> acc(size_t(L + R));
  for (int64_t r = 0; r < p.n_keys; ++r) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int32_t e = p.key_ptr[r]; e < p.key_ptr[r + 1]; ++e) {
      const int64_t s = p.key_list[e] / p.K, j = p.key_list[e] % p.K;
      DSA_CHECK(s >= 0 && s < p.S, "sparse_mla_bwd_kv: slot {} outside [0, S*K)", p.key_list[e]);
      for (int64_t h = 0; h < p.H; ++h) {
        const int64_t sh = s * p.H + h;
        const double pr = p.P[sh * p.K + j], g = p.G[sh * p.K + j];
        const float* dov = p.d_o + sh * L;
        for (int64_t i = 0; i < L; ++i) acc[size_t(i)] += pr * dov[i] + g * double(ld(p.q_abs[sh * L + i]));
        for (int64_t i = 0; i < R; ++i) acc[size_t(L + i)] += g * double(ld(p.q_pe[sh * R + i]));
      }
    }
    for (int64_t i = 0; i < L + R; ++i) p.d_kv[r * (L + R) + i] = float(acc[size_t(i)]);
  }
}

}  // namespace dsa::ops::ref
