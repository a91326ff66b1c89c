// Reference lightning-indexer logits (spec §3.8) and the per-row top-k selection (spec §7 step 10).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/ref/ref_util.h"

namespace dsa::ops::ref {

void indexer_logits(const IndexerLogits& p) {
  DSA_CHECK(p.S > 0 && p.H > 0 && p.D > 0 && p.N > 0,
            "indexer_logits: bad dims S={} H={} D={} N={}", p.S, p.H, p.D, p.N);
  DSA_CHECK(p.k_stride >= p.D && p.k_s_stride >= 1,
            "indexer_logits: k_stride={} < D={} or k_s_stride={}", p.k_stride, p.D, p.k_s_stride);
  DSA_CHECK(p.q && p.w && p.k && p.k_s && p.end && p.out, "indexer_logits: null pointer");
  int64_t max_end = 0;
  for (int64_t t = 0; t < p.S; ++t) {
    DSA_CHECK(p.end[t] >= 0 && p.end[t] <= p.N, "indexer_logits: end[{}]={} outside [0, {}]", t,
              p.end[t], p.N);
    max_end = std::max<int64_t>(max_end, p.end[t]);
  }
  std::vector<float> k(size_t(max_end * p.D)), q(size_t(p.H * p.D));
  for (int64_t s = 0; s < max_end; ++s)
    for (int64_t d = 0; d < p.D; ++d) k[size_t(s * p.D + d)] = kFp8Table[p.k[s * p.k_stride + d]];
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < p.S; ++t) {
    for (int64_t i = 0; i < p.H * p.D; ++i) q[size_t(i)] = kFp8Table[p.q[t * p.H * p.D + i]];
    const float* w = p.w + t * p.H;
    float* out = p.out + t * p.N;
    for (int64_t s = 0; s < p.end[t]; ++s) {
      const float* ks = k.data() + s * p.D;
      float acc = 0.0f;
      for (int64_t h = 0; h < p.H; ++h) {
        const float* qh = q.data() + h * p.D;
        float dot = 0.0f;
        for (int64_t d = 0; d < p.D; ++d) dot += qh[d] * ks[d];
        acc += w[h] * std::max(dot, 0.0f);
      }
      out[s] = acc * p.k_s[s * p.k_s_stride];
    }
    for (int64_t s = p.end[t]; s < p.N; ++s) out[s] = ninf;
  }
}

void topk(const TopK& p) {
  DSA_CHECK(p.S > 0 && p.N > 0 && p.k > 0, "topk: bad dims S={} N={} k={}", p.S, p.N, p.k);
  DSA_CHECK(p.scores && p.end && p.idx, "topk: null pointer");
  std::vector<int32_t> cand;
  std::vector<float> key;
  for (int64_t t = 0; t < p.S; ++t) {
    const int64_t e = p.end[t];
    DSA_CHECK(e >= 0 && e <= p.N, "topk: end[{}]={} outside [0, {}]", t, e, p.N);
    const float* sc = p.scores + t * p.N;
    key.resize(size_t(e));
    cand.resize(size_t(e));
    for (int64_t s = 0; s < e; ++s) {
      key[size_t(s)] = std::isnan(sc[s]) ? -std::numeric_limits<float>::infinity() : sc[s];
      cand[size_t(s)] = int32_t(s);
    }
    const int64_t kk = std::min(p.k, e);
    // Larger score first; equal scores: lower index first (deterministic tie-break).
    auto better = [&](int32_t a, int32_t b) {
      return key[size_t(a)] > key[size_t(b)] || (key[size_t(a)] == key[size_t(b)] && a < b);
    };
    if (kk > 0 && kk < e)
      std::nth_element(cand.begin(), cand.begin() + (kk - 1), cand.end(), better);
    std::sort(cand.begin(), cand.begin() + kk);
    int32_t* idx = p.idx + t * p.k;
    for (int64_t j = 0; j < p.k; ++j) idx[j] = j < kk ? cand[size_t(j)] : -1;
  }
}

}  // namespace dsa::ops::ref
