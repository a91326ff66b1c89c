// The model-driven synthesizer (DeepSeek-V3.2's own workflow, spec v32-training.md §4): a model
// behind a chat endpoint writes an environment spec (database, tools, a task with its gold
// solution and verifier) as JSON; the spec is loaded and validated in the sandbox (spec errors,
// SQL checks, gold replay, verifier mutations: verify.h); the failures go back to the model as a
// follow-up message until the spec validates or the round budget is spent; then the model is
// asked for a harder version, one difficulty step at a time. Only validated specs are kept.
// The endpoint is an interface so that the pipeline is testable without a network; the HTTP
// implementation (any OpenAI-compatible /chat/completions) lives in app/.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "env/spec.h"

namespace dsa::env {

struct ChatReply {
  std::string text;        // the assistant message's content
  bool truncated = false;  // the endpoint stopped at its token limit (finish_reason "length")
};

// Messages in (OpenAI chat format: [{"role": "system"|"user"|"assistant", "content": "..."}]),
// the assistant's reply out. Throws (dsa::Error) on transport failures.
class ChatEndpoint {
 public:
  virtual ~ChatEndpoint() = default;
  virtual ChatReply complete(const Json& messages) = 0;
};

struct ModelSynthOptions {
  int rounds = 4;            // replies per difficulty level (the first one included) before giving up
  int levels = 3;            // difficulty levels asked for, start_level, start_level + 1, ...
  int start_level = 1;       // 1..5
  std::string topic;         // optional subject for the environment ("a hotel's bookings")
  int tasks_per_spec = 1;    // tasks asked for per spec (at least this many must validate)
};

// One model reply and what became of it.
struct SynthRound {
  int level = 0, round = 0;  // 1-based round within the level
  bool ok = false;
  std::string error;         // every problem found, one per line (empty when ok)
  std::string spec_name;     // when the reply parsed as a spec
};

struct ModelSynthResult {
  std::vector<EnvSpec> kept;       // the validated specs, in level order
  std::vector<SynthRound> rounds;
  Json messages = Json::array();   // the whole conversation with the model
  std::string stopped;             // why the pipeline stopped early ("" = every level validated)
};

// The JSON object in a model reply: the text itself, or the contents of a ```json fence, or the
// span from the first '{' to the last '}'. Returns "" when there is no '{'.
std::string extract_json_object(const std::string& reply);

// Loads and validates one spec text for difficulty `level`: every problem found, one per line
// ("" when valid). Checks: JSON and spec structure (parse_spec), the database and every tool's SQL
// (build_image), at least `min_tasks` tasks, each task's difficulty >= level, and per task the gold
// replay, the gold answer against its verifier and the verifier mutations (validate_task).
// `previous` are the instructions of the specs kept so far (a harder version must be new).
std::string check_spec_reply(const std::string& reply, int level, int min_tasks,
                             const std::vector<std::string>& previous, EnvSpec* out);

// The system prompt that teaches the spec format (with a worked example that itself validates).
std::string model_synth_system_prompt();
// The example spec embedded in the system prompt (exposed for tests).
std::string model_synth_example_spec();

ModelSynthResult synthesize_with_model(ChatEndpoint& endpoint, const ModelSynthOptions& opt,
                                       const std::function<void(const SynthRound&)>& on_round = {});

}  // namespace dsa::env
