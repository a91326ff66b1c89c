// Reference MoE gate (spec §8.2): sigmoid scores, group-limited selection by biased scores,
// weights from the unbiased scores. Ties are broken by the lower index.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "ops/ref/ref_util.h"

namespace dsa::ops::ref {

void moe_gate(const MoeGate& p) {
  DSA_CHECK(p.T > 0 && p.E > 0 && p.n_group > 0 && p.topk_group > 0 && p.topk > 0,
            "moe_gate: bad dims T={} E={} n_group={} topk_group={} topk={}", p.T, p.E, p.n_group,
            p.topk_group, p.topk);
  DSA_CHECK(p.E % p.n_group == 0 && p.topk_group <= p.n_group &&
                p.topk <= p.topk_group * (p.E / p.n_group),
            "moe_gate: inconsistent E={} n_group={} topk_group={} topk={}", p.E, p.n_group,
            p.topk_group, p.topk);
  DSA_CHECK(p.logits && p.experts && p.weights, "moe_gate: null pointer");
  const int64_t G = p.n_group, gs = p.E / p.n_group;
  const float ninf = -std::numeric_limits<float>::infinity();
  std::vector<float> s(size_t(p.E)), b(size_t(p.E)), gscore(static_cast<size_t>(G));
  std::vector<int32_t> order(size_t(std::max(p.E, G)));
  for (int64_t t = 0; t < p.T; ++t) {
    const float* lg = p.logits + t * p.E;
    for (int64_t e = 0; e < p.E; ++e) {
      s[size_t(e)] = 1.0f / (1.0f + std::exp(-lg[e]));
      b[size_t(e)] = p.bias ? s[size_t(e)] + p.bias[e] : s[size_t(e)];
      if (p.biased) p.biased[t * p.E + e] = b[size_t(e)];
    }
    // Group score: sum of the two largest biased scores (with bias) or the maximum (without).
    for (int64_t g = 0; g < G; ++g) {
      float m1 = ninf, m2 = ninf;
      for (int64_t e = g * gs; e < (g + 1) * gs; ++e) {
        const float v = b[size_t(e)];
        if (v > m1) {
          m2 = m1;
          m1 = v;
        } else if (v > m2) {
          m2 = v;
        }
      }
      gscore[size_t(g)] = (p.bias && gs >= 2) ? m1 + m2 : m1;
    }
    if (G > 1) {
      std::iota(order.begin(), order.begin() + G, 0);
      std::stable_sort(order.begin(), order.begin() + G,
                       [&](int32_t x, int32_t y) { return gscore[size_t(x)] > gscore[size_t(y)]; });
      for (int64_t j = p.topk_group; j < G; ++j)
        for (int64_t e = order[size_t(j)] * gs; e < (order[size_t(j)] + 1) * gs; ++e)
          b[size_t(e)] = ninf;
    }
    std::iota(order.begin(), order.begin() + p.E, 0);
    std::stable_sort(order.begin(), order.begin() + p.E,
                     [&](int32_t x, int32_t y) { return b[size_t(x)] > b[size_t(y)]; });
    std::sort(order.begin(), order.begin() + p.topk);
    float sum = 0.0f;
    for (int64_t j = 0; j < p.topk; ++j) sum += s[size_t(order[size_t(j)])];
    for (int64_t j = 0; j < p.topk; ++j) {
      float w = s[size_t(order[size_t(j)])];
      if (p.norm_topk_prob) w = w / sum;
      p.experts[t * p.topk + j] = order[size_t(j)];
      p.weights[t * p.topk + j] = w * p.route_scale;
    }
  }
}

}  // namespace dsa::ops::ref
