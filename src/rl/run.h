// A GRPO run (`dsa rl grpo`, docs/rl.md §6): a model (a checkpoint or a random preset), the
// serving engine on it, prompts of a verifiable task, and steps of rollouts → rewards → GRPO
// updates with the weights updated in place; metrics per step (JSONL, CSV, a reward plot) and an
// export at the end.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "env/agent.h"
#include "rl/grpo.h"
#include "rl/rollouts.h"
#include "runtime/engine.h"
#include "train/optimizer.h"

namespace dsa::rl {

struct GrpoRunConfig {
  std::string init;                 // V3.2-layout checkpoint; "" = random init of `preset`
  std::string preset = "micro";
  uint64_t init_seed = 1234;
  std::string backend = "cpu";
  // The task. "mod4": prompts of random ids; reward = the share of sampled ids divisible by 4,
  // pass = reward >= 0.5 — a verifiable task any vocabulary has, for the stabilisers' ablations
  // and the mismatch measurements. "env": the environments' tasks (env_file, or synthesized from
  // env_seed; the train split) played by the agent loop on the engine (multi-turn episodes, one
  // sample each); reward = pass (the task's verifier) + format_reward when the episode ended
  // with a well-formed answer − length_penalty × sampled ids / agent.max_tokens.
  std::string task = "mod4";
  std::string env_file;             // spec file (.json / .jsonl); "" = synthesized
  uint64_t env_seed = 1;
  std::string tokenizer;            // "" = the default tokenizer.json
  env::AgentOptions agent;          // turn and token budgets of an episode
  double format_reward = 0.1, length_penalty = 0.0;
  int prompts = 4;                  // prompts (tasks) per step, each sampled rollout.group_size times
  int prompt_len = 6;               // prompt i has prompt_len + 3 i ids
  int steps = 12;
  uint64_t seed = 1;                // prompts and sampling
  RolloutOptions rollout;
  GrpoConfig grpo;
  double lr = 1e-2;
  train::AdamWConfig adam{.weight_decay = 0.0};
  // Regexes of parameters left alone (every one must match); the indexers and the MTP block get
  // no gradient from the GRPO objective and are frozen by default.
  std::vector<std::string> freeze = {"DEFAULT"};
  EngineOptions engine;
  std::string out = "runs/rl";      // metrics.jsonl, metrics.csv, reward.png, export/
  bool export_at_end = true;
};

struct GrpoRunSummary {
  int steps = 0;
  double first_reward = 0, last_reward = 0;  // mean of the first / last two steps
  double mismatch_max = 0;                   // over every step (before each step's first update)
  double seconds = 0, rollout_seconds = 0, update_seconds = 0;
  int64_t dropped = 0;                       // env episodes that could not become samples
  std::string export_dir;
};

GrpoRunSummary run_grpo(const GrpoRunConfig& cfg, const std::function<void(const std::string&)>& log);

}  // namespace dsa::rl
