// Rollouts for GRPO from the serving engine: G samples per prompt submitted together (the engine
// batches them continuously), each recording what the trainer needs — the sampled ids, the
// engine's log-probs (full and renormalised over the sampling mask), the sampling masks and the
// experts every MoE layer chose (rl/grpo.h's Sample).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "rl/grpo.h"
#include "runtime/engine.h"

namespace dsa::rl {

struct RolloutOptions {
  int group_size = 8;                 // G samples per prompt
  int64_t max_tokens = 64;            // sampled ids per sample at most (a stop id included)
  SamplingParams sampling{.temperature = 1.0f};  // sample j of prompt g draws with seed + g * G + j
  std::vector<int32_t> stop_ids;
};

// Samples group_size responses for each prompt (groups numbered first_group + prompt index) and
// waits for all of them; reward is left 0 (the caller scores them). Throws dsa::Error when the
// engine refuses or fails a request.
std::vector<Sample> sample_groups(Engine& engine, const std::vector<std::vector<int32_t>>& prompts,
                                  const RolloutOptions& opt, int64_t first_group = 0);

}  // namespace dsa::rl
