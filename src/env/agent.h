// The agent loop: multi-turn episodes in the V3.2 format. The system message carries the tools
// (rendered by text/chat_encoding as the tools block), the policy's completions are parsed by the
// strict DSML parser (text/completion_parser), calls run in the episode's sandbox and come back as
// tool messages; reasoning stays in the history across tool turns (the encoder drops it only
// before a new user message). Episodes end at a final answer, a malformed completion, the turn
// budget or the token budget, and are then verified.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "env/sandbox.h"
#include "env/spec.h"
#include "runtime/engine.h"
#include "text/tokenizer.h"

namespace dsa::env {

struct AgentOptions {
  int max_turns = 8;                 // assistant turns per episode
  int64_t max_tokens = 4096;         // generated tokens per episode
  int64_t max_turn_tokens = 1024;    // generated tokens per turn
  bool thinking = false;             // V3.2 thinking mode
  SandboxLimits limits;
};

// What an RL trainer needs of one assistant turn (policies that have token access fill it).
struct TurnRecord {
  std::vector<int32_t> prompt;    // the prompt ids of this turn
  std::vector<int32_t> tokens;    // sampled ids (the stop token included when it was sampled)
  std::vector<double> logprobs;   // log-probability of each sampled id under the model (SampleInfo::logprob)
  std::vector<double> logprobs_kept;  // renormalised over its sampling mask (SampleInfo::logprob_kept)
  std::vector<uint8_t> loss_mask; // 1 for every sampled id (loss on), per token of `tokens`
  // Keep-sampling-mask: per sampled id, the ids its draw could have produced (the top-k / top-p
  // survivors, ascending), as rows mask_ids[mask_offsets[i] .. mask_offsets[i+1]); an empty row
  // means nothing was cut (the whole vocabulary). mask_offsets has tokens.size() + 1 entries.
  std::vector<int64_t> mask_offsets;
  std::vector<int32_t> mask_ids;
  // Keep-routing: the experts each MoE layer chose at every position the model ran on (the
  // prompt and the sampled ids fed back: prompt.size() + tokens.size() - 1 rows), in
  // TrainOptions::replay's layout for the sequence prompt + tokens minus its last id.
  std::shared_ptr<const Decisions> experts;
  Json to_json() const;           // ids, log-probs, masks and experts ([rows][moe layer][k])
};

struct PolicyReply {
  bool ok = true;
  std::string error;              // transport / engine failure (the episode ends: policy_error)
  bool structured = false;        // message holds an OpenAI assistant message (endpoint policies)
  std::string raw;                // else: the completion text after the prompt, special tokens kept
  Json message;
  int64_t tokens = 0;             // generated tokens
  TurnRecord record;
};

struct EpisodeContext {
  const EnvSpec& env;
  const TaskSpec& task;
  const AgentOptions& opt;
  int turn = 0;
  int64_t tokens_left = 0;
};

class Policy {
 public:
  virtual ~Policy() = default;
  // The next assistant turn for the messages so far. Must be safe to call from several threads
  // (run_episodes runs episodes concurrently).
  virtual PolicyReply next(const Json& messages, const EpisodeContext& ctx) = 0;
};

// One task ready to run: its spec, image and gold end state.
struct TaskRef {
  const EnvSpec* env = nullptr;
  std::shared_ptr<const DbImage> image;
  const TaskSpec* task = nullptr;
  uint64_t gold_state = 0;
};
// Builds every spec's image once and replays every gold solution (throws on an invalid spec).
std::vector<TaskRef> prepare_tasks(const std::vector<EnvSpec>& specs);

struct Episode {
  std::string task_id, domain, split;
  int difficulty = 0;
  bool pass = false;
  std::string end;                // answer | malformed | max_turns | token_budget | policy_error
  std::string detail;             // parser / policy error text
  std::vector<std::string> failures;
  std::string final_answer;
  int turns = 0, tool_calls = 0, tool_errors = 0;
  int64_t tokens = 0;
  double seconds = 0;
  Json messages;                  // the whole conversation (system with tools, user, turns)
  std::vector<TurnRecord> records;
  Json to_json(bool with_messages) const;
};

// Live display: kind is one of reasoning, content, call, result, error, end.
using EventFn = std::function<void(const std::string& kind, const std::string& text)>;

// The initial messages: system (prompt + tools) and the user instruction.
Json initial_messages(const EnvSpec& env, const TaskSpec& task);
Episode run_episode(const TaskRef& t, Policy& p, const AgentOptions& opt, const EventFn& on_event = {});
// Runs every (task, attempt) pair on `threads` workers; results in order (task-major).
std::vector<Episode> run_episodes(const std::vector<TaskRef>& tasks, int attempts, Policy& p, const AgentOptions& opt,
                                  int threads, const std::function<void(size_t done, size_t total)>& progress = {});

// The completion text V3.2 would produce for an assistant message (reasoning, content, tool
// calls), taken from the chat encoder's own rendering.
std::string render_completion(const Json& assistant_message, bool thinking);

// Replays the gold solution: one call per turn, then the gold answer (with the gold reasoning in
// thinking mode).
class GoldPolicy : public Policy {
 public:
  PolicyReply next(const Json& messages, const EpisodeContext& ctx) override;
};

// A policy that goes wrong in one of several ways (chosen per task from the seed, or fixed):
// unknown tools, wrong argument types, malformed DSML, gold calls with a wrong final answer and a
// skipped write, or never stopping.
class FaultyPolicy : public Policy {
 public:
  enum Mode { kUnknownTool, kBadArguments, kMalformed, kWrongAnswer, kNeverStops, kMixed };
  explicit FaultyPolicy(Mode m) : mode_(m) {}
  PolicyReply next(const Json& messages, const EpisodeContext& ctx) override;

 private:
  Mode mode_;
};

// A local model on the continuous-batching engine: concurrent episodes are batched by the engine.
class EnginePolicy : public Policy {
 public:
  EnginePolicy(Engine& engine, const text::Tokenizer& tok, int32_t eos_id, SamplingParams sampling, bool record_logprobs);
  PolicyReply next(const Json& messages, const EpisodeContext& ctx) override;

 private:
  Engine& engine_;
  const text::Tokenizer& tok_;
  int32_t eos_;
  SamplingParams sampling_;
  bool record_;
  std::atomic<uint64_t> calls_{0};
};

}  // namespace dsa::env
