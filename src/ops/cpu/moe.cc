// CPU MoE gate (spec §8.2): the reference's selection with partial sorts (value desc, index asc,
// which is what its stable sorts choose) instead of full sorts, tokens split over the pool.
// Grouped expert GEMM (one fast fp8_gemm per expert, as the per-expert loop did) and the
// combine (the reference's, tokens split over the pool).
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "base/error.h"
#include "base/thread_pool.h"
#include "ops/cpu/cpu_ops.h"
#include "ops/ref/ref_util.h"  // grouped GEMM by group, combine rows

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")  // same rounding as ops/ref (exact equality)
#endif

namespace dsa::ops::cpu {

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
  parallel_for(p.T, [&](int64_t t0, int64_t t1) {
    std::vector<float> s(size_t(p.E)), b(size_t(p.E)), gscore(static_cast<size_t>(G));
    std::vector<int32_t> order(size_t(std::max(p.E, G)));
    for (int64_t t = t0; t < t1; ++t) {
      const float* lg = p.logits + t * p.E;
      for (int64_t e = 0; e < p.E; ++e) {
        s[size_t(e)] = 1.0f / (1.0f + std::exp(-lg[e]));
        b[size_t(e)] = p.bias ? s[size_t(e)] + p.bias[e] : s[size_t(e)];
        if (p.biased) p.biased[t * p.E + e] = b[size_t(e)];
      }
      if (G > 1) {
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
        std::iota(order.begin(), order.begin() + G, 0);
        std::partial_sort(order.begin(), order.begin() + p.topk_group, order.begin() + G,
                          [&](int32_t x, int32_t y) {
                            const float a = gscore[size_t(x)], c = gscore[size_t(y)];
                            return a > c || (a == c && x < y);
                          });
        for (int64_t j = p.topk_group; j < G; ++j)
          for (int64_t e = order[size_t(j)] * gs; e < (order[size_t(j)] + 1) * gs; ++e)
            b[size_t(e)] = ninf;
      }
      std::iota(order.begin(), order.begin() + p.E, 0);
      std::partial_sort(order.begin(), order.begin() + p.topk, order.begin() + p.E,
                        [&](int32_t x, int32_t y) {
                          const float a = b[size_t(x)], c = b[size_t(y)];
                          return a > c || (a == c && x < y);
                        });
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
  });
}

void grouped_fp8_gemm(const GroupedFp8Gemm& p) {
  // Same M per call as the old per-expert loop, so the same fp8_gemm path (GEMV below 16 rows)
  // and bit-identical outputs.
  ref::grouped_fp8_gemm_by_group(p, &fp8_gemm);
}

void moe_combine(const MoeCombine& p) {
  DSA_CHECK(p.S >= 0 && p.k > 0 && p.H > 0, "moe_combine: bad dims S={} k={} H={}", p.S, p.k, p.H);
  DSA_CHECK(p.acc && p.y && p.pos && p.w, "moe_combine: null pointer");
  // Tokens are independent: each chunk is the reference on its rows (same rounding).
  parallel_for(p.S, [&](int64_t s0, int64_t s1) {
    ref::moe_combine({p.acc + s0 * p.H, p.y, p.pos + s0 * p.k, p.w, s1 - s0, p.k, p.H});
  });
}

}  // namespace dsa::ops::cpu
