// Agent-loop episodes as GRPO samples (docs/rl.md §7).
#pragma once
#include "env/agent.h"
#include "rl/grpo.h"

namespace dsa::rl {

// One episode of the agent loop (env::run_episode with a recording EnginePolicy) as one sample:
// the first turn's prompt, then everything after it up to the last turn's last sampled id — each
// turn's sampled ids (loss mask 1, with the engine's log-probs and sampling masks) and the tokens
// between turns (tool results and the template; loss mask 0) — and the last turn's experts, which
// cover every row. Each turn's prompt must start with the previous turn's prompt and sampled ids,
// token for token (the agent loop re-encodes the history each turn); returns false where that
// fails (a sampled tokenisation the encoder does not reproduce) or a record is missing, and then
// leaves `out` unspecified. Reward, pass and group are left to the caller.
bool episode_sample(const env::Episode& e, Sample& out);

}  // namespace dsa::rl
