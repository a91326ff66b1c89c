// Verifiers (on the final answer and/or the database end state, as tau-bench does), gold replay,
// and task validation by mutation: the gold solution must pass, and answers with the verified
// content altered, and end states without (or with a changed) last write, must fail.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "env/sandbox.h"
#include "env/spec.h"

namespace dsa::env {

struct VerifyResult {
  bool pass = false;
  std::vector<std::string> failures;  // one line per failed check
};

// end_state / gold_state: Sandbox::state_hash values (ignored unless the task checks db_state).
VerifyResult verify(const TaskSpec& t, const std::string& final_answer, uint64_t end_state, uint64_t gold_state);

struct GoldRun {
  bool ok = false;              // every gold call succeeded
  std::string error;
  uint64_t end_state = 0;
  std::vector<ToolResult> results;
};
// Replays `calls` (default: the task's gold calls) on a fresh copy of the image.
GoldRun replay(const EnvSpec& s, const std::shared_ptr<const DbImage>& img, const std::vector<ToolCallSpec>& calls);

struct Validation {
  bool ok = false;
  std::string error;     // why the task is invalid
  int mutations = 0;     // mutations tried (all failed the verifier when ok)
  uint64_t gold_state = 0;
};
Validation validate_task(const EnvSpec& s, const std::shared_ptr<const DbImage>& img, const TaskSpec& t);

// The wrong answers validate_task tries (exposed for tests).
std::vector<std::string> answer_mutations(const TaskSpec& t);

// The last number in a text ("1,234.50" -> 1234.5); false when there is none.
bool last_number(const std::string& text, double* out);

}  // namespace dsa::env
