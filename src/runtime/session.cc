// Generation loop.
#include "runtime/session.h"

#include <algorithm>
#include <fstream>
#include <string>

namespace dsa {

std::vector<int32_t> Session::generate(const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                                       const std::function<bool(int32_t)>& on_token, GenerateStats* stats) {
  DSA_CHECK(!prompt.empty(), "the prompt is empty");
  DSA_CHECK(opt.max_new_tokens >= 0, "max_new_tokens must be >= 0");
  DSA_CHECK(opt.prefill_chunk >= 0, "prefill chunk must be >= 0");
  const int64_t V = m_.config().vocab_size;
  DSA_CHECK(st_.len + int64_t(prompt.size()) + opt.max_new_tokens <= m_.config().max_position_embeddings,
            "prompt ({}) + max_new_tokens ({}) exceed the model's context ({})", prompt.size(), opt.max_new_tokens,
            m_.config().max_position_embeddings);
  Sampler sampler(opt.sampling);
  using clock = std::chrono::steady_clock;
  ForwardOptions fo;
  fo.dump = opt.dump;
  fo.absorbed_prefill = opt.absorbed_prefill;
  auto t0 = clock::now();
  std::vector<float> logits;
  for (int64_t i = 0, P = int64_t(prompt.size()); i < P;) {
    const int64_t n = prefill_piece(P - i, opt.prefill_chunk);
    std::vector<int32_t> piece(prompt.begin() + i, prompt.begin() + i + n);
    logits = m_.forward(st_, piece, fo);
    i += n;
  }
  auto t1 = clock::now();
  std::vector<int32_t> out;
  int64_t steps = 0;
  while (int64_t(out.size()) < opt.max_new_tokens) {
    const int32_t tok = sampler.sample(logits.data() + (logits.size() / V - 1) * V, V);
    out.push_back(tok);
    const bool stop = std::find(opt.stop_ids.begin(), opt.stop_ids.end(), tok) != opt.stop_ids.end();
    if ((on_token && !on_token(tok)) || stop || int64_t(out.size()) == opt.max_new_tokens) break;
    logits = m_.forward(st_, {tok}, fo);
    ++steps;
  }
  auto t2 = clock::now();
  if (stats) {
    stats->prompt_tokens = int64_t(prompt.size());
    stats->generated = int64_t(out.size());
    stats->decode_steps = steps;
    stats->prefill_s = std::chrono::duration<double>(t1 - t0).count();
    stats->decode_s = std::chrono::duration<double>(t2 - t1).count();
  }
  return out;
}

int64_t prefill_piece(int64_t remaining, int64_t chunk) {
  if (chunk <= 0 || chunk >= remaining) return remaining;
  const int64_t n = std::max<int64_t>(chunk, 2);
  if (remaining - n == 1) return n > 2 ? n - 1 : remaining;  // never leave a 1-token last piece
  return std::min(n, remaining);
}

size_t peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return size_t(std::stoull(line.substr(6))) * 1024;
  return 0;
}

}  // namespace dsa
