// Sampler: greedy, temperature, top-k, top-p, seeding, parameter checks.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace dsa
