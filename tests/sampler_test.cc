// Sampler: greedy, temperature, top-k, top-p, seeding, parameter checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "base/error.h"
#include "runtime/sampler.h"

namespace dsa {
namespace {

const std::vector<float> kLogits = {1.0f, 3.0f, 2.0f, 3.0f, -1.0f, 0.5f};

TEST(Sampler, GreedyTakesTheFirstMaximum) {
  Sampler s({0.0f, 0, 1.0f, 1});
  EXPECT_EQ(s.sample(kLogits.data(), int64_t(kLogits.size())), 1);
}

TEST(Sampler, TopKOneAndTinyTopPAreArgmax) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    Sampler a({1.0f, 1, 1.0f, seed}), b({1.0f, 0, 1e-6f, seed});
    EXPECT_EQ(a.sample(kLogits.data(), 6), 1);
    EXPECT_EQ(b.sample(kLogits.data(), 6), 1);
  }
}

TEST(Sampler, FrequenciesFollowSoftmaxWithinTopK) {
  // T = 1, top-k 3 keeps ids {1, 3, 2} with probabilities e^3, e^3, e^2 normalised.
  Sampler s({1.0f, 3, 1.0f, 42});
  std::map<int32_t, int> n;
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) ++n[s.sample(kLogits.data(), 6)];
  const double z = 2 * std::exp(3.0) + std::exp(2.0);
  EXPECT_EQ(n.size(), 3u);
  // 5 standard deviations of a binomial proportion at 20000 draws: ≤ 5·sqrt(p(1-p)/n) ≈ 0.018.
  EXPECT_NEAR(n[1] / double(draws), std::exp(3.0) / z, 0.018);
  EXPECT_NEAR(n[3] / double(draws), std::exp(3.0) / z, 0.018);
  EXPECT_NEAR(n[2] / double(draws), std::exp(2.0) / z, 0.018);
}

TEST(Sampler, TopPKeepsTheSmallestNucleus) {
  // Probabilities at T=1 of ids 1 and 3 are 0.365 each: top_p 0.5 needs both, never id 2.
  Sampler s({1.0f, 0, 0.5f, 7});
  for (int i = 0; i < 2000; ++i) {
    const int32_t t = s.sample(kLogits.data(), 6);
    EXPECT_TRUE(t == 1 || t == 3) << t;
  }
}

TEST(Sampler, SameSeedSameSequence) {
  Sampler a({0.7f, 0, 0.95f, 123}), b({0.7f, 0, 0.95f, 123});
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.sample(kLogits.data(), 6), b.sample(kLogits.data(), 6));
}

TEST(Sampler, RejectsBadParameters) {
  auto make = [](float t, int64_t k, float p) { Sampler s(SamplingParams{t, k, p, 0}); };
  EXPECT_THROW(make(-0.1f, 0, 1.0f), Error);
  EXPECT_THROW(make(1.0f, -1, 1.0f), Error);
  EXPECT_THROW(make(1.0f, 0, 0.0f), Error);
  EXPECT_THROW(make(1.0f, 0, 1.5f), Error);
  EXPECT_THROW(make(NAN, 0, 1.0f), Error);
  const std::vector<float> nan(4, NAN);
  Sampler s({1.0f, 0, 1.0f, 0});
  EXPECT_THROW(s.sample(nan.data(), 4), Error);
}

TEST(Sampler, KeptSetIsTheMaskOfTheDraw) {
  std::vector<int32_t> kept;
  Sampler g({0.0f, 0, 1.0f, 1});
  EXPECT_EQ(g.sample(kLogits.data(), 6, &kept), 1);
  EXPECT_EQ(kept, (std::vector<int32_t>{1}));
  // top-k 3: ids {1, 3, 2} by logit, reported ascending; every draw inside the set.
  Sampler k({1.0f, 3, 1.0f, 9});
  for (int i = 0; i < 200; ++i) {
    const int32_t t = k.sample(kLogits.data(), 6, &kept);
    EXPECT_EQ(kept, (std::vector<int32_t>{1, 2, 3}));
    EXPECT_TRUE(std::binary_search(kept.begin(), kept.end(), t)) << t;
  }
  // top-p 0.5: the nucleus {1, 3}; top-p 0.8 adds id 2 (0.384 + 0.384 < 0.8 <= 0.909).
  Sampler p5({1.0f, 0, 0.5f, 3}), p8({1.0f, 0, 0.8f, 3});
  p5.sample(kLogits.data(), 6, &kept);
  EXPECT_EQ(kept, (std::vector<int32_t>{1, 3}));
  p8.sample(kLogits.data(), 6, &kept);
  EXPECT_EQ(kept, (std::vector<int32_t>{1, 2, 3}));
  // Nothing cut: empty (the whole vocabulary); a stale set is cleared.
  Sampler full({1.0f, 0, 1.0f, 3});
  full.sample(kLogits.data(), 6, &kept);
  EXPECT_TRUE(kept.empty());
  // top-k at least the vocabulary cuts nothing either; a NaN logit is excluded, so the set is explicit.
  Sampler big({1.0f, 6, 1.0f, 3});
  big.sample(kLogits.data(), 6, &kept);
  EXPECT_TRUE(kept.empty());
  std::vector<float> with_nan = kLogits;
  with_nan[4] = NAN;
  full.sample(with_nan.data(), 6, &kept);
  EXPECT_EQ(kept, (std::vector<int32_t>{0, 1, 2, 3, 5}));
}

}  // namespace
}  // namespace dsa
