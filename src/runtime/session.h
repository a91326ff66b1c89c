// A generation session over one sequence: chunked prefill, decode loop, sampling, stop tokens,
// timing. Public entry point for the CLI (and later the server).
#pragma once
#include <chrono>
#include <functional>
#include <vector>

#include "model/model.h"
#include "runtime/sampler.h"

namespace dsa {

// Prompt tokens per prefill call unless told otherwise (the server's default too): one piece
// would need memory quadratic in the prompt length.
inline constexpr int64_t kDefaultPrefillChunk = 256;

// Size of the next prefill piece of a prompt with `remaining` tokens left: at most `chunk`
// (0 = everything), never 1 token unless the whole prompt is 1 token (a single token takes the
// decode path, S = 1, whose rounding differs), so any chunking gives the result of one piece.
int64_t prefill_piece(int64_t remaining, int64_t chunk);

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  int64_t prefill_chunk = kDefaultPrefillChunk;  // 0 = whole prompt in one piece
  bool absorbed_prefill = false;   // ForwardOptions::absorbed_prefill
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;   // generation ends after emitting one of these
  Dump* dump = nullptr;
};

struct GenerateStats {
  int64_t prompt_tokens = 0, generated = 0;
  int64_t decode_steps = 0;  // forward calls after the prefill (generated - 1 unless stopped early)
  double prefill_s = 0, decode_s = 0;
  double prefill_tok_s() const { return prefill_s > 0 ? prompt_tokens / prefill_s : 0; }
  double decode_tok_s() const { return decode_s > 0 ? decode_steps / decode_s : 0; }
};

class Session {
 public:
  explicit Session(Model& m) : m_(m), st_(m.new_sequence()) {}
  // Feeds the prompt (in chunks of prefill_chunk), then samples up to max_new_tokens tokens;
  // on_token is called for each generated token and may return false to stop early.
  std::vector<int32_t> generate(const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                                const std::function<bool(int32_t)>& on_token, GenerateStats* stats);
  const SequenceState& state() const { return st_; }

 private:
  Model& m_;
  SequenceState st_;
};

// Peak resident set size of this process in bytes (from /proc/self/status VmHWM).
size_t peak_rss_bytes();

}  // namespace dsa
