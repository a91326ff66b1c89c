// Indexer training ops (ops/grad.h): the KL loss against the attention's distribution and the
// backward of indexer_logits. Scalar reference; the cpu table uses these as they are.
#include <cmath>
#include <limits>
#include <vector>

#include "base/error.h"
#include "ops/ref/ref_util.h"

namespace dsa::ops::ref {

void indexer_kl(const IndexerKl& p) {
  DSA_CHECK(p.S >= 0 && p.H > 0 && p.K >= 0 && p.N >= 0, "indexer_kl: bad shape S={} H={} K={} N={}", p.S, p.H, p.K,
            p.N);
  DSA_CHECK(!p.sel || p.ksel > 0, "indexer_kl: a selection needs ksel > 0");
  std::vector<double> pt(size_t(p.K)), lq(size_t(p.K));
  std::vector<char> in_sel;
  for (int64_t t = 0; t < p.S; ++t) {
    const int32_t* idx = p.idx + t * p.K;
    const float* z = p.scores + t * p.N;
    double total = 0.0, mx = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < p.K; ++j) {
      pt[size_t(j)] = 0.0;
      if (idx[j] < 0) continue;
      DSA_CHECK(idx[j] < p.N, "indexer_kl: row {} slot {} names key {} of {}", t, j, idx[j], p.N);
      double sum = 0.0;
      for (int64_t h = 0; h < p.H; ++h) sum += p.P[(t * p.H + h) * p.K + j];
      pt[size_t(j)] = sum;
      total += sum;
      mx = std::max(mx, double(z[idx[j]]));
    }
    if (p.d_scores)
      for (int64_t s = 0; s < p.N; ++s) p.d_scores[t * p.N + s] = 0.0f;
    double loss = 0.0, rec = 0.0;
    if (total > 0.0 && std::isfinite(mx)) {
      double se = 0.0;
      for (int64_t j = 0; j < p.K; ++j)
        if (idx[j] >= 0) se += std::exp(double(z[idx[j]]) - mx);
      const double lse = mx + std::log(se);
      if (p.sel) {
        in_sel.assign(size_t(p.N), 0);
        for (int64_t i = 0; i < p.ksel; ++i) {
          const int32_t s = p.sel[t * p.ksel + i];
          if (s >= 0 && s < p.N) in_sel[size_t(s)] = 1;
        }
      }
      for (int64_t j = 0; j < p.K; ++j) {
        if (idx[j] < 0) continue;
        const double pj = pt[size_t(j)] / total, lqj = double(z[idx[j]]) - lse;
        if (pj > 0.0) loss += pj * (std::log(pj) - lqj);
        if (p.sel && in_sel[size_t(idx[j])]) rec += pj;
        if (p.d_scores) p.d_scores[t * p.N + idx[j]] = float(double(p.coef) * (std::exp(lqj) - pj));
      }
    }
    p.loss[t] = loss;
    if (p.recall) p.recall[t] = rec;
  }
}

void indexer_logits_bwd(const IndexerLogitsBwd& p) {
  const int64_t H = p.H, D = p.D;
  const double c = 1.0 / std::sqrt(double(H)) / std::sqrt(double(D));
  std::vector<float> q(static_cast<size_t>(H * D)), k(static_cast<size_t>(D));
  for (int64_t t = 0; t < p.S; ++t) {
    DSA_CHECK(p.end[t] >= 0 && p.end[t] <= p.N && p.key_base[t] >= 0 && p.key_base[t] + p.end[t] <= p.NK,
              "indexer_logits_bwd: row {} sees keys [{}, {}) of {} (N = {})", t, p.key_base[t],
              p.key_base[t] + p.end[t], p.NK, p.N);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < D; ++d) q[size_t(h * D + d)] = kFp8Table[p.q8[(t * H + h) * D + d]] * p.qs[t * H + h];
    float* dq = p.dq + t * H * D;
    float* dw = p.dw + t * H;
    for (int64_t i = 0; i < H * D; ++i) dq[i] = 0.0f;
    std::vector<double> dwa(size_t(H), 0.0), dqa(size_t(H * D), 0.0);
    for (int64_t s = 0; s < p.end[t]; ++s) {
      const double g = p.dI[t * p.N + s];
      if (g == 0.0) continue;
      const int64_t r = p.key_base[t] + s;
      for (int64_t d = 0; d < D; ++d) k[size_t(d)] = kFp8Table[p.k8[r * D + d]] * p.ks[r];
      for (int64_t h = 0; h < H; ++h) {
        double a = 0.0;
        for (int64_t d = 0; d < D; ++d) a += double(q[size_t(h * D + d)]) * k[size_t(d)];
        if (a <= 0.0) continue;
        dwa[size_t(h)] += c * g * a;
        const double gw = c * g * p.w[t * H + h];
        for (int64_t d = 0; d < D; ++d) {
          dqa[size_t(h * D + d)] += gw * k[size_t(d)];
          p.dk[r * D + d] += float(gw * q[size_t(h * D + d)]);
        }
      }
    }
    for (int64_t h = 0; h < H; ++h) dw[h] = float(dwa[size_t(h)]);
    for (int64_t i = 0; i < H * D; ++i) dq[i] = float(dqa[size_t(i)]);
  }
}

}  // namespace dsa::ops::ref
