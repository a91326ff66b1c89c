// Sampler: softmax(logits / T) restricted to top-k and the top-p nucleus, inverse-CDF draw from a
// seeded 64-bit Mersenne Twister (the same seed gives the same tokens).
#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"

namespace dsa {

Sampler::Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) {
  DSA_CHECK(std::isfinite(p.temperature) && p.temperature >= 0, "temperature must be >= 0, got {}", p.temperature);
  DSA_CHECK(p.top_k >= 0, "top_k must be >= 0, got {}", p.top_k);
  DSA_CHECK(std::isfinite(p.top_p) && p.top_p > 0 && p.top_p <= 1, "top_p must be in (0, 1], got {}", p.top_p);
}

int32_t Sampler::sample(const float* logits, int64_t vocab, std::vector<int32_t>* kept) {
  DSA_CHECK(vocab > 0, "sample: empty vocabulary");
  if (kept) kept->clear();
  if (p_.temperature == 0.0f) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; ++i)
      if (logits[i] > logits[best]) best = i;  // first maximum wins
    if (kept && vocab > 1) kept->push_back(int32_t(best));
    return int32_t(best);
  }
  cand_.clear();
  for (int64_t i = 0; i < vocab; ++i)
    if (!std::isnan(logits[i])) cand_.emplace_back(logits[i], int32_t(i));
  DSA_CHECK(!cand_.empty(), "sample: all logits are NaN");
  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  size_t n = cand_.size();
  if (p_.top_k > 0 && size_t(p_.top_k) < n) {
    std::partial_sort(cand_.begin(), cand_.begin() + p_.top_k, cand_.end(), by_logit);
    n = size_t(p_.top_k);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  const double inv_t = 1.0 / p_.temperature, mx = cand_[0].first;
  std::vector<double> prob(n);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += prob[i] = std::exp((cand_[i].first - mx) * inv_t);
  // Nucleus: keep the smallest prefix whose mass reaches top_p.
  size_t keep = n;
  if (p_.top_p < 1.0f) {
    double cum = 0;
    for (size_t i = 0; i < n; ++i) {
      cum += prob[i] / sum;
      if (cum >= p_.top_p) { keep = i + 1; break; }
    }
  }
  if (kept && int64_t(keep) < vocab) {
    for (size_t i = 0; i < keep; ++i) kept->push_back(cand_[i].second);
    std::sort(kept->begin(), kept->end());
  }
  double mass = 0;
  for (size_t i = 0; i < keep; ++i) mass += prob[i];
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_) * mass;
  double cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += prob[i];
    if (u < cum) return cand_[i].second;
  }
  return cand_[keep - 1].second;
}

}  // namespace dsa
