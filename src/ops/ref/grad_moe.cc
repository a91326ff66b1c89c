// Reference backward of the MoE gate's combine weights and of the routed-expert combine
// (ops/grad.h MoeGateBwd, MoeCombineBwd). fp64 inside, fp32 out.
#include <cmath>
#include <vector>

#include "ops/grad.h"
#include "ops/ref/ref_util.h"

namespace dsa::ops::ref {

void moe_gate_bwd(const MoeGateBwd& p) {
  DSA_CHECK(p.T >= 0 && p.E > 0 && p.k > 0 && p.k <= p.E, "moe_gate_bwd: bad shape");
  std::vector<double> sc(size_t(p.E)), ds(size_t(p.E));
  for (int64_t t = 0; t < p.T; ++t) {
    for (int64_t e = 0; e < p.E; ++e) {
      // The forward's fp32 sigmoid.
      sc[size_t(e)] = 1.0f / (1.0f + std::exp(-p.logits[t * p.E + e]));
      ds[size_t(e)] = p.d_scores ? double(p.d_scores[t * p.E + e]) : 0.0;
    }
    const int32_t* ex = p.experts + t * p.k;
    const float* dw = p.d_weights + t * p.k;
    double sum = 0.0, dot = 0.0;
    for (int64_t j = 0; j < p.k; ++j) {
      DSA_CHECK(ex[j] >= 0 && ex[j] < p.E, "moe_gate_bwd: expert id {} outside [0, {})", ex[j], p.E);
      sum += sc[size_t(ex[j])];
      dot += double(dw[j]) * sc[size_t(ex[j])];
    }
    for (int64_t j = 0; j < p.k; ++j) {
      const double g = p.norm_topk_prob ? (double(dw[j]) / sum - dot / (sum * sum)) : double(dw[j]);
      ds[size_t(ex[j])] += double(p.route_scale) * g;
    }
    for (int64_t e = 0; e < p.E; ++e)
      p.d_logits[t * p.E + e] = float(ds[size_t(e)] * sc[size_t(e)] * (1.0 - sc[size_t(e)]));
  }
}

void moe_combine_bwd(const MoeCombineBwd& p) {
  for (int64_t i = 0; i < p.R * p.H; ++i) p.d_y[i] = 0.0f;
  for (int64_t r = 0; r < p.R; ++r) p.d_w[r] = 0.0f;
  for (int64_t s = 0; s < p.S; ++s)
    for (int64_t j = 0; j < p.k; ++j) {
      const int32_t r = p.pos[s * p.k + j];
      if (r < 0) continue;
      DSA_CHECK(r < p.R, "moe_combine_bwd: grouped row {} outside [0, {})", r, p.R);
      const float* da = p.d_acc + s * p.H;
      const bf16* y = p.y + int64_t(r) * p.H;
      float* dy = p.d_y + int64_t(r) * p.H;
      double dot = 0.0;
      for (int64_t h = 0; h < p.H; ++h) {
        dy[h] = da[h] * p.w[r];
        dot += double(da[h]) * double(ld(y[h]));
      }
      p.d_w[r] = float(dot);
    }
}

}  // namespace dsa::ops::ref
