// Continuous-batching engine: one thread runs admission, one prefill chunk and one batched decode
// step per iteration; all model calls happen on that thread.
#include "runtime/engine.h"

#include <malloc.h>

#include <algorithm>
#include <cmath>

#include "base/numeric.h"
#include "runtime/session.h"

namespace dsa {

namespace {

// Rows [r0, r0 + n) of one call's expert choices appended to a request's record.
void append_experts(Decisions& to, const Decisions& call, int64_t r0, int64_t n, int64_t k) {
  for (size_t l = 0; l < call.layers.size() && l < to.layers.size(); ++l) {
    const auto& e = call.layers[l].experts;
    if (e.empty()) continue;
    to.layers[l].experts.insert(to.layers[l].experts.end(), e.begin() + r0 * k, e.begin() + (r0 + n) * k);
  }
}

// The first n rows of a record.
std::shared_ptr<Decisions> first_rows(const Decisions& d, int64_t n, int64_t k) {
  auto out = std::make_shared<Decisions>();
  out->layers.resize(d.layers.size());
  append_experts(*out, d, 0, n, k);
  return out;
}

}  // namespace

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "error";
}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds.size() && v > bounds[i]) ++i;
  ++counts[i];
  sum += v;
  ++count;
}

Engine::Engine(Model& model, const EngineOptions& opt) : m_(model), opt_(opt) {
  DSA_CHECK(opt_.page_size > 0 && opt_.kv_pages > 0, "page size and KV pages must be > 0");
  DSA_CHECK(opt_.max_batch > 0, "max batch must be > 0");
  DSA_CHECK(opt_.prefill_chunk >= 2, "prefill chunk must be >= 2");
  kv_ = m_.make_kv_cache(opt_.page_size, opt_.kv_pages);
  vocab_ = m_.config().vocab_size;
  k_ = m_.config().num_experts_per_tok;
  max_ctx_ = m_.config().max_position_embeddings;
  // Back the whole budget with memory now (steady RSS under load); a budget beyond the backend's
  // memory is refused here, before serving, with the number of pages that would fit.
  if (opt_.prewarm_kv) kv_->preallocate();
  metrics_.kv_pages_total = opt_.kv_pages;
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() { shutdown(); }

void Engine::shutdown() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

uint64_t Engine::submit(GenRequest req) {
  auto reject = [&](bool busy, const std::string& msg) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      ++metrics_.requests_rejected;
    }
    if (busy) throw EngineBusy(msg);
    throw Error(msg);
  };
  const int64_t P = int64_t(req.prompt.size());
  if (P == 0) reject(false, "the prompt is empty");
  for (int32_t t : req.prompt)
    if (t < 0 || t >= vocab_) reject(false, fmt::format("token id {} is out of range [0, {})", t, vocab_));
  for (auto& [t, b] : req.logit_bias)
    if (t < 0 || t >= vocab_) reject(false, fmt::format("logit_bias token id {} is out of range [0, {})", t, vocab_));
  if (req.max_tokens < 1) reject(false, "max_tokens must be >= 1");
  if (P + req.max_tokens > max_ctx_)
    reject(false, fmt::format("prompt ({} tokens) + max_tokens ({}) exceed the model's context ({})", P,
                              req.max_tokens, max_ctx_));
  const int64_t need = pages_needed(P + req.max_tokens);
  if (need > opt_.kv_pages)
    reject(false, fmt::format("prompt ({} tokens) + max_tokens ({}) need {} KV pages but the KV cache holds only {} "
                              "pages of {} tokens; shorten the prompt or lower max_tokens",
                              P, req.max_tokens, need, opt_.kv_pages, opt_.page_size));
  auto s = std::make_unique<Seq>(Seq{0, std::move(req), SequenceState(kv_), nullptr, 0, 0, 0, -1, false, {}, {}, nullptr, {}});
  try {
    s->sampler = std::make_unique<Sampler>(s->req.sampling);
  } catch (const Error& e) {
    reject(false, e.what());
  }
  if (s->req.record_experts) {
    s->routes = std::make_shared<Decisions>();
    s->routes->layers.assign(size_t(m_.config().num_hidden_layers), {});
  }
  s->submitted = Clock::now();
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stop_) {
      ++metrics_.requests_rejected;
      throw EngineBusy("the engine is shutting down");
    }
    if (int64_t(incoming_.size()) + metrics_.queue_length >= opt_.max_queue) {
      ++metrics_.requests_rejected;
      throw EngineBusy(fmt::format("the request queue is full ({} waiting); retry later", opt_.max_queue));
    }
    id = next_id_++;
    s->id = id;
    incoming_.push_back(std::move(s));
    busy_ = true;
  }
  cv_.notify_all();
  return id;
}

void Engine::flush_prefix_cache() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    flush_ = true;
  }
  cv_.notify_all();
}

void Engine::cancel(uint64_t id) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    cancels_.push_back(id);
  }
  cv_.notify_all();
}

EngineMetrics Engine::metrics() const {
  std::lock_guard<std::mutex> lk(mu_);
  return metrics_;
}

void Engine::wait_idle() {
  std::unique_lock<std::mutex> lk(mu_);
  idle_cv_.wait(lk, [&] { return !busy_ && incoming_.empty(); });
}

void Engine::finish(Seq& s, FinishReason r, const std::string& err) {
  if (s.done) return;
  s.done = true;
  s.state.clear();  // pages back at once (shared prefix pages stay with the cache)
  {
    std::lock_guard<std::mutex> lk(mu_);
    ++metrics_.requests_finished[int(r)];
  }
  if (s.req.on_done) s.req.on_done(GenResult{r, err, int64_t(s.req.prompt.size()), s.generated, s.cached, s.routes});
}

bool Engine::take_token(Seq& s, float* logits) {
  for (auto& [t, b] : s.req.logit_bias) logits[t] += b;
  const int32_t tok = s.sampler->sample(logits, vocab_, s.req.record_mask ? &s.mask : nullptr);
  if (s.req.on_sample) {
    SampleInfo si;
    si.token = tok;
    si.logprob = double(logits[tok]) - log_sum_exp(logits, vocab_);
    si.logprob_kept = si.logprob;
    if (s.req.record_mask) {
      si.mask = &s.mask;
      if (!s.mask.empty())
        si.logprob_kept = double(logits[tok]) - log_sum_exp_subset(logits, s.mask.data(), int64_t(s.mask.size()));
    }
    s.req.on_sample(si);
  }
  const auto now = Clock::now();
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (s.generated == 0)
      metrics_.ttft.observe(std::chrono::duration<double>(now - s.submitted).count());
    else
      metrics_.itl.observe(std::chrono::duration<double>(now - s.last_token).count());
    ++metrics_.generated_tokens;
  }
  s.last_token = now;
  ++s.generated;
  if (std::find(s.req.stop_ids.begin(), s.req.stop_ids.end(), tok) != s.req.stop_ids.end()) {
    finish(s, FinishReason::kStop);
    return true;
  }
  if (s.req.on_token && !s.req.on_token(tok)) {
    finish(s, FinishReason::kStop);
    return true;
  }
  if (s.generated >= s.req.max_tokens) {
    finish(s, FinishReason::kLength);
    return true;
  }
  s.last = tok;
  return false;
}

bool Engine::evict_one_prefix() {
  if (prefix_cache_.empty()) return false;
  prefix_cache_.pop_back();
  return true;
}

void Engine::remember_prefix(const Seq& s) {
  if (opt_.prefix_cache_entries <= 0) return;
  const int64_t ps = opt_.page_size, n = int64_t(s.req.prompt.size()) / ps * ps;
  if (n == 0) return;
  std::vector<int32_t> toks(s.req.prompt.begin(), s.req.prompt.begin() + n);
  for (auto it = prefix_cache_.begin(); it != prefix_cache_.end();) {
    const auto& t = it->tokens;
    if (t.size() >= toks.size() && std::equal(toks.begin(), toks.end(), t.begin())) {
      if (!it->routes && s.routes && t.size() == toks.size()) it->routes = first_rows(*s.routes, n, k_);
      prefix_cache_.splice(prefix_cache_.begin(), prefix_cache_, it);  // already covered: refresh
      return;
    }
    if (t.size() < toks.size() && std::equal(t.begin(), t.end(), toks.begin()))
      it = prefix_cache_.erase(it);  // a shorter prefix of ours: superseded (t is the shorter one)
    else
      ++it;
  }
  // Full pages: shared, no copy. The experts of those rows go with them for recording requests.
  prefix_cache_.push_front(CacheEntry{std::move(toks), s.state.fork(n), s.routes ? first_rows(*s.routes, n, k_) : nullptr});
  while (int64_t(prefix_cache_.size()) > opt_.prefix_cache_entries) prefix_cache_.pop_back();
}

bool Engine::admit(std::unique_ptr<Seq>& s) {
  const auto& prompt = s->req.prompt;
  const int64_t P = int64_t(prompt.size()), total = P + s->req.max_tokens, ps = opt_.page_size;
  for (;;) {
    // Longest cached prefix at page granularity; at least two prompt tokens stay to prefill so
    // the last chunk takes the same (S > 1) path as when the prompt is fed alone.
    auto best = prefix_cache_.end();
    int64_t best_n = 0;
    for (auto it = prefix_cache_.begin(); it != prefix_cache_.end(); ++it) {
      if (s->routes && !it->routes) continue;  // a recording request needs the experts of the rows it skips
      const auto& t = it->tokens;
      const size_t lim = std::min(t.size(), prompt.size());
      size_t l = 0;
      while (l < lim && t[l] == prompt[l]) ++l;
      const int64_t n = std::min<int64_t>(int64_t(l), P - 2) / ps * ps;
      if (n > best_n) best_n = n, best = it;
    }
    const int64_t need = pages_needed(total) - best_n / ps;
    if (kv_->free_pages() >= need) {
      try {
        SequenceState st = best_n > 0 ? best->state.fork(best_n) : SequenceState(kv_);
        st.reserve(total - best_n);
        s->state = std::move(st);
      } catch (const Error&) {
        return false;
      }
      s->prefilled = s->cached = best_n;
      if (best_n > 0 && s->routes) append_experts(*s->routes, *best->routes, 0, best_n, k_);
      if (best_n > 0) prefix_cache_.splice(prefix_cache_.begin(), prefix_cache_, best);
      std::lock_guard<std::mutex> lk(mu_);
      metrics_.prompt_tokens += uint64_t(P);
      if (best_n > 0) {
        ++metrics_.prefix_cache_hits;
        metrics_.prefix_cached_tokens += uint64_t(best_n);
      }
      return true;
    }
    if (!evict_one_prefix()) return false;
  }
}

void Engine::prefill_step(Seq& s) {
  const int64_t P = int64_t(s.req.prompt.size()), rem = P - s.prefilled;
  const int64_t n = prefill_piece(rem, opt_.prefill_chunk);  // never a 1-token piece (the decode path)
  std::vector<int32_t> piece(s.req.prompt.begin() + s.prefilled, s.req.prompt.begin() + s.prefilled + n);
  std::vector<float> logits;
  try {
    ForwardOptions fo;
    fo.absorbed_prefill = opt_.absorbed_prefill;
    Decisions d;
    if (s.routes) {
      fo.record = &d;
      fo.record_topk = false;
    }
    logits = m_.forward(s.state, piece, fo);
    if (s.routes) append_experts(*s.routes, d, 0, n, k_);
  } catch (const std::exception& e) {
    finish(s, FinishReason::kError, e.what());
    return;
  }
  s.prefilled += n;
  {
    std::lock_guard<std::mutex> lk(mu_);
    ++metrics_.prefill_steps;
  }
  if (s.prefilled < P) return;
  remember_prefix(s);
  take_token(s, logits.data() + (int64_t(logits.size()) / vocab_ - 1) * vocab_);
}

void Engine::decode_step() {
  std::vector<Seq*> ds;
  for (auto& s : running_)
    if (!s->done && s->prefilled == int64_t(s->req.prompt.size()) && s->last >= 0) ds.push_back(s.get());
  if (ds.empty()) return;
  std::vector<SequenceState*> states;
  std::vector<int32_t> toks;
  bool rec = false;
  for (Seq* s : ds) {
    states.push_back(&s->state);
    toks.push_back(s->last);
    rec = rec || s->routes;
  }
  std::vector<float> logits;
  try {
    ForwardOptions fo;
    Decisions d;
    if (rec) {
      fo.record = &d;
      fo.record_topk = false;
    }
    logits = m_.forward_decode(states, toks, fo);
    for (size_t i = 0; i < ds.size() && rec; ++i)
      if (ds[i]->routes) append_experts(*ds[i]->routes, d, int64_t(i), 1, k_);
  } catch (const std::exception& e) {
    for (Seq* s : ds) finish(*s, FinishReason::kError, e.what());
    return;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    ++metrics_.decode_steps;
  }
  for (size_t i = 0; i < ds.size(); ++i) take_token(*ds[i], logits.data() + int64_t(i) * vocab_);
}

void Engine::drop_finished() {
  running_.erase(std::remove_if(running_.begin(), running_.end(), [](const auto& s) { return s->done; }),
                 running_.end());
  waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(), [](const auto& s) { return s->done; }),
                 waiting_.end());
}

void Engine::loop() {
  for (;;) {
    std::vector<uint64_t> cancels;
    {
      std::unique_lock<std::mutex> lk(mu_);
      auto has_work = [&] {
        return stop_ || flush_ || !incoming_.empty() || !cancels_.empty() || !running_.empty() || !waiting_.empty();
      };
      if (!has_work()) {
        // Idle: give the model's cached temporaries back, so memory returns to its baseline.
        lk.unlock();
        m_.backend().release_cache();
        lk.lock();
      }
      cv_.wait(lk, has_work);
      if (stop_) break;
      while (!incoming_.empty()) {
        waiting_.push_back(std::move(incoming_.front()));
        incoming_.pop_front();
      }
      cancels.swap(cancels_);
      if (flush_) {
        prefix_cache_.clear();  // forks only: pages still held by running sequences stay theirs
        metrics_.prefix_cache_entries = 0;
        flush_ = false;
      }
    }
    for (uint64_t id : cancels) {
      for (auto& s : running_)
        if (s->id == id) finish(*s, FinishReason::kCancelled);
      for (auto& s : waiting_)
        if (s->id == id) finish(*s, FinishReason::kCancelled);
    }
    drop_finished();
    // Admission in arrival order; a request that does not fit yet blocks those behind it (no
    // starvation of long prompts).
    while (!waiting_.empty() && int64_t(running_.size()) < opt_.max_batch) {
      if (!admit(waiting_.front())) {
        if (running_.empty())  // cannot happen after the submit() check unless pages leaked
          finish(*waiting_.front(), FinishReason::kError, "KV cache full: the request cannot be admitted");
        else
          break;
      } else {
        running_.push_back(std::move(waiting_.front()));
      }
      waiting_.pop_front();
    }
    // One prefill chunk (oldest unfinished prompt first), then one decode step for everyone else.
    for (auto& s : running_)
      if (!s->done && s->prefilled < int64_t(s->req.prompt.size())) {
        prefill_step(*s);
        break;
      }
    decode_step();
    drop_finished();
    bool idle = false;
    {
      std::lock_guard<std::mutex> lk(mu_);
      metrics_.queue_length = int64_t(waiting_.size());
      metrics_.running = int64_t(running_.size());
      metrics_.kv_pages_in_use = kv_->pages_in_use();
      metrics_.prefix_cache_entries = int64_t(prefix_cache_.size());
      if (running_.empty() && waiting_.empty() && incoming_.empty()) {
        idle = busy_;
        busy_ = false;
      }
    }
    if (idle) {
      malloc_trim(0);  // give freed request buffers back to the OS between bursts
      idle_cv_.notify_all();
    }
  }
  // Shutdown: everything still pending ends with an error.
  std::deque<std::unique_ptr<Seq>> rest;
  {
    std::lock_guard<std::mutex> lk(mu_);
    rest.swap(incoming_);
  }
  for (auto& s : rest) finish(*s, FinishReason::kError, "the server is shutting down");
  for (auto& s : waiting_) finish(*s, FinishReason::kError, "the server is shutting down");
  for (auto& s : running_) finish(*s, FinishReason::kError, "the server is shutting down");
  waiting_.clear();
  running_.clear();
  prefix_cache_.clear();
  {
    std::lock_guard<std::mutex> lk(mu_);
    busy_ = false;
  }
  idle_cv_.notify_all();
}

}  // namespace dsa
