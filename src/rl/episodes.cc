// Agent-loop episodes as GRPO samples (rl/episodes.h).
#include "rl/episodes.h"

#include <algorithm>

namespace dsa::rl {

bool episode_sample(const env::Episode& e, Sample& out) {
  if (e.records.empty()) return false;
  const env::TurnRecord& first = e.records.front();
  if (first.prompt.empty()) return false;
  out = Sample{};
  out.prompt = first.prompt;
  out.mask_offsets = {0};
  std::vector<int32_t> seq = first.prompt;  // everything so far
  for (const env::TurnRecord& r : e.records) {
    const size_t n = r.tokens.size();
    if (n == 0 || r.logprobs.size() != n || r.logprobs_kept.size() != n || r.mask_offsets.size() != n + 1 ||
        r.mask_offsets.back() != int64_t(r.mask_ids.size()))
      return false;
    // This turn's prompt = the history so far + the tokens given since (tool results, template).
    if (r.prompt.size() < seq.size() || !std::equal(seq.begin(), seq.end(), r.prompt.begin())) return false;
    for (size_t i = seq.size(); i < r.prompt.size(); ++i) {
      out.tokens.push_back(r.prompt[i]);
      out.loss_mask.push_back(0);
      out.logp.push_back(0.0);
      out.logp_kept.push_back(0.0);
      out.mask_offsets.push_back(int64_t(out.mask_ids.size()));
    }
    seq = r.prompt;
    for (size_t j = 0; j < n; ++j) {
      out.tokens.push_back(r.tokens[j]);
      out.loss_mask.push_back(1);
      out.logp.push_back(r.logprobs[j]);
      out.logp_kept.push_back(r.logprobs_kept[j]);
      out.mask_ids.insert(out.mask_ids.end(), r.mask_ids.begin() + r.mask_offsets[j],
                          r.mask_ids.begin() + r.mask_offsets[j + 1]);
      out.mask_offsets.push_back(int64_t(out.mask_ids.size()));
      seq.push_back(r.tokens[j]);
    }
  }
  out.experts = e.records.back().experts;
  return out.experts != nullptr;
}

}  // namespace dsa::rl
