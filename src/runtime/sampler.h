// Token sampling: greedy, temperature, top-k, top-p (nucleus); seeded and reproducible.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace dsa {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy (argmax)
  int64_t top_k = 0;         // 0 = off
  float top_p = 1.0f;        // 1 = off
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);  // validates the parameters (throws dsa::Error)
  // Draws one id. kept (optional) receives the sampling mask of the draw: the ids it could have
  // produced, ascending — {argmax} when greedy, the top-k / top-p survivors otherwise — and is
  // left empty when nothing was cut (every id of the vocabulary possible). V3.2's keep-sampling-mask
  // applies this set to the trainer's policy.
  int32_t sample(const float* logits, int64_t vocab, std::vector<int32_t>* kept = nullptr);

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;
};

}  // namespace dsa
