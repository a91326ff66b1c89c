// Reference MoE gate (spec §8.2): sigmoid scores, group-limited selection by biased scores,
// weights from the unbiased scores. Ties are broken by the lower index. Then the routing table
// (a stable counting sort of the choices by expert) and the combine of the routed outputs.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "ops/ref/ref_util.h"

namespace dsa::ops::ref {

void moe_gate(const MoeGate& p) {
  check(p);
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

void moe_route(const MoeRoute& p) {
  DSA_CHECK(p.S > 0 && p.k > 0 && p.E > 0, "moe_route: bad dims S={} k={} E={}", p.S, p.k, p.E);
  DSA_CHECK(p.experts && p.weights && p.offsets && p.rows && p.row_w && p.pos, "moe_route: null pointer");
  const int64_t n = p.S * p.k;
  for (int64_t i = 0; i < n; ++i)
    DSA_CHECK(p.experts[i] >= 0 && p.experts[i] < p.E, "moe_route: expert id {} of choice {} outside [0, {})",
              p.experts[i], i, p.E);
  // Counts, exclusive prefix sum, then placement in (token, j) order: stable within a group.
  std::fill(p.offsets, p.offsets + p.E + 1, 0);
  for (int64_t i = 0; i < n; ++i) ++p.offsets[p.experts[i] + 1];
  for (int64_t e = 0; e < p.E; ++e) p.offsets[e + 1] += p.offsets[e];
  std::vector<int32_t> next(p.offsets, p.offsets + p.E);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t r = next[size_t(p.experts[i])]++;
    p.rows[r] = int32_t(i / p.k);
    p.row_w[r] = p.weights[i];
    p.pos[i] = r;
  }
}

void moe_combine(const MoeCombine& p) {
  DSA_CHECK(p.S >= 0 && p.k > 0 && p.H > 0, "moe_combine: bad dims S={} k={} H={}", p.S, p.k, p.H);
  DSA_CHECK(p.acc && p.y && p.pos && p.w, "moe_combine: null pointer");
  std::vector<int32_t> order(static_cast<size_t>(p.k));
  for (int64_t s = 0; s < p.S; ++s) {
    // Ascending grouped row = ascending expert id: the order of one scale_add per expert.
    std::copy(p.pos + s * p.k, p.pos + (s + 1) * p.k, order.begin());
    std::sort(order.begin(), order.end());
    float* a = p.acc + s * p.H;
    for (const int32_t r : order) {
      if (r < 0) continue;
      const bf16* y = p.y + int64_t(r) * p.H;
      const float w = p.w[r];
      for (int64_t d = 0; d < p.H; ++d) a[d] += ld(y[d]) * w;
    }
  }
}

}  // namespace dsa::ops::ref
