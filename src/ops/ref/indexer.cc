// Reference lightning-indexer logits (spec §3.8) and the per-row top-k selection (spec §7 step 10).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "ops/ref/ref_util.h"

namespace dsa::ops::ref {

void indexer_logits(const IndexerLogits& p) {
  const IndexPages& kp = p.k;
  const int64_t D = kp.D;
  check(p);
  const float ninf = -std::numeric_limits<float>::infinity();
  std::vector<float> q(static_cast<size_t>(p.H * D)), k(static_cast<size_t>(D));
  for (int64_t t = 0; t < p.S; ++t) {
    for (int64_t i = 0; i < p.H * D; ++i) q[size_t(i)] = kFp8Table[p.q[t * p.H * D + i]];
    const float* w = p.w + t * p.H;
    const int32_t* bt = kp.block_table + t * kp.bt_stride;
    float* out = p.out + t * p.N;
    for (int64_t s = 0; s < p.end[t]; ++s) {
      const int32_t page = bt[s / kp.page_size];
      const int64_t slot = s % kp.page_size;
      const uint8_t* base = kp.pool + int64_t(page) * kp.page_bytes();
      for (int64_t d = 0; d < D; ++d) k[size_t(d)] = kFp8Table[base[slot * D + d]];
      float ks;
      std::memcpy(&ks, base + kp.page_size * D + 4 * slot, 4);
      float acc = 0.0f;
      for (int64_t h = 0; h < p.H; ++h) {
        const float* qh = q.data() + h * D;
        float dot = 0.0f;
        for (int64_t d = 0; d < D; ++d) dot += qh[d] * k[size_t(d)];
        acc += w[h] * std::max(dot, 0.0f);
      }
      out[s] = acc * ks;
    }
    for (int64_t s = p.end[t]; s < p.N; ++s) out[s] = ninf;
  }
}

void topk(const TopK& p) {
  check(p);
  std::vector<int32_t> cand;
  std::vector<float> key;
  for (int64_t t = 0; t < p.S; ++t) {
    const int64_t e = p.end[t];
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
