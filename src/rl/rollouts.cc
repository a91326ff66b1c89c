// Rollouts from the serving engine (rl/rollouts.h).
#include "rl/rollouts.h"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "base/error.h"

namespace dsa::rl {

std::vector<Sample> sample_groups(Engine& engine, const std::vector<std::vector<int32_t>>& prompts,
                                  const RolloutOptions& opt, int64_t first_group) {
  DSA_CHECK(opt.group_size >= 1, "rollouts: group size {} < 1", opt.group_size);
  const size_t G = size_t(opt.group_size), N = prompts.size() * G;
  std::vector<Sample> out(N);
  std::vector<GenResult> res(N);
  std::mutex mu;
  std::condition_variable cv;
  size_t done = 0;
  for (size_t i = 0; i < N; ++i) {
    Sample& s = out[i];
    s.group = first_group + int64_t(i / G);
    s.prompt = prompts[i / G];
    s.mask_offsets = {0};
    GenRequest r;
    r.prompt = s.prompt;
    r.max_tokens = opt.max_tokens;
    r.sampling = opt.sampling;
    r.sampling.seed = opt.sampling.seed + uint64_t(i);
    r.stop_ids = opt.stop_ids;
    r.record_mask = r.record_experts = true;
    r.on_sample = [&s](const SampleInfo& si) {  // engine thread; s is read after on_done
      s.tokens.push_back(si.token);
      s.logp.push_back(si.logprob);
      s.logp_kept.push_back(si.logprob_kept);
      s.mask_ids.insert(s.mask_ids.end(), si.mask->begin(), si.mask->end());
      s.mask_offsets.push_back(int64_t(s.mask_ids.size()));
    };
    r.on_done = [&, i](const GenResult& g) {
      std::lock_guard<std::mutex> lk(mu);
      res[i] = g;
      ++done;
      cv.notify_all();
    };
    for (;;) {  // a full queue empties as requests finish
      try {
        engine.submit(r);  // a copy: a refused request is sent again
        break;
      } catch (const EngineBusy&) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
  }
  {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return done == N; });
  }
  for (size_t i = 0; i < N; ++i) {
    DSA_CHECK(res[i].reason != FinishReason::kError && res[i].reason != FinishReason::kCancelled,
              "rollouts: sample {} failed: {}", i, res[i].error.empty() ? "cancelled" : res[i].error);
    out[i].experts = res[i].experts;
  }
  return out;
}

}  // namespace dsa::rl
