// Continuous-batching generation engine: a request queue, KV-page admission, chunked prefill
// interleaved with batched decode steps, per-request sampling/stops, a prefix cache, metrics.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/error.h"
#include "model/model.h"
#include "runtime/sampler.h"

namespace dsa {

struct EngineOptions {
  int64_t page_size = 64;
  int64_t kv_pages = 1024;          // KV page budget (all sequences + the prefix cache)
  int64_t max_batch = 16;           // sequences decoded together at most
  int64_t prefill_chunk = 256;      // prompt tokens per prefill step
  int64_t max_queue = 256;          // waiting requests beyond this are refused
  int64_t prefix_cache_entries = 8; // finished prompts kept for prefix reuse (0 = off)
  bool prewarm_kv = true;           // touch the whole KV pool at start (steady memory)
  bool absorbed_prefill = false;    // prefill through decode's attention (ForwardOptions)
};

// submit() refusal because the queue is full (retry later), as opposed to an invalid request.
class EngineBusy : public Error {
 public:
  using Error::Error;
};

enum class FinishReason { kStop, kLength, kCancelled, kError };
const char* finish_reason_name(FinishReason r);

struct GenResult {
  FinishReason reason = FinishReason::kStop;
  std::string error;           // set for kError
  int64_t prompt_tokens = 0;
  int64_t generated = 0;       // sampled tokens, a final stop id included
  int64_t cached_tokens = 0;   // prompt tokens taken from the prefix cache
  // With GenRequest::record_experts: the experts every MoE layer chose at each position the model
  // ran for this request — the prompt (rows taken from the prefix cache included) and every
  // sampled token fed back, i.e. prompt_tokens + generated - 1 rows when it ends normally — in
  // TrainOptions::replay's layout (layers[l].experts [rows, num_experts_per_tok], top-k sets
  // left empty): V3.2's keep-routing.
  std::shared_ptr<const Decisions> experts;
};

// One sampled token (GenRequest::on_sample).
struct SampleInfo {
  int32_t token = 0;
  // log p(token) under the logits (bias added, before temperature): z[token] - log_sum_exp(z),
  // the trainer's own log-softmax (base/numeric.h), so a trainer on the same weights and path
  // reproduces it bit for bit.
  double logprob = 0;
  // With record_mask: log p(token) renormalised over the sampling mask (keep-sampling-mask:
  // z[token] - log_sum_exp_subset(z, mask)); equal to logprob when nothing was cut.
  double logprob_kept = 0;
  const std::vector<int32_t>* mask = nullptr;  // with record_mask: the sampling mask (Sampler::sample's kept set)
};

struct GenRequest {
  std::vector<int32_t> prompt;
  int64_t max_tokens = 16;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;                       // generation ends after one of these (not reported)
  std::vector<std::pair<int32_t, float>> logit_bias;   // added to the logits before sampling
  // Called on the engine thread for every generated token (stop ids excluded); return false to
  // end the request with kStop (e.g. a stop string matched).
  std::function<bool(int32_t)> on_token;
  // When set: called on the engine thread for every sampled token (a stop id included, before
  // on_token) — what RL rollouts record.
  std::function<void(const SampleInfo&)> on_sample;
  bool record_mask = false;      // SampleInfo::mask: the ids the draw could have produced
  bool record_experts = false;   // GenResult::experts (keep-routing)
  // Called exactly once on the engine thread when the request ends (also on rejection after
  // submit, cancellation and shutdown).
  std::function<void(const GenResult&)> on_done;
};

// Fixed-bucket latency histogram (seconds), Prometheus-style cumulative on output.
struct Histogram {
  std::vector<double> bounds;
  std::vector<uint64_t> counts;  // per bucket (non-cumulative), last = +Inf
  double sum = 0;
  uint64_t count = 0;
  explicit Histogram(std::vector<double> b) : bounds(std::move(b)), counts(bounds.size() + 1, 0) {}
  void observe(double v);
};

struct EngineMetrics {
  uint64_t requests_finished[4] = {0, 0, 0, 0};  // by FinishReason
  uint64_t requests_rejected = 0;
  uint64_t prompt_tokens = 0, generated_tokens = 0;
  uint64_t prefix_cache_hits = 0, prefix_cached_tokens = 0;
  uint64_t decode_steps = 0, prefill_steps = 0;
  int64_t queue_length = 0, running = 0;
  int64_t kv_pages_in_use = 0, kv_pages_total = 0, prefix_cache_entries = 0;
  Histogram ttft{{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}};
  Histogram itl{{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}};
};

class Engine {
 public:
  Engine(Model& model, const EngineOptions& opt);
  ~Engine();  // stops the thread; pending requests end with kError "shutting down"
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates and queues a request; returns its id. Throws dsa::Error (request not queued, no
  // callback called) when it can never run: empty prompt, bad token ids, bad sampling params,
  // prompt + max_tokens beyond the context or the whole KV budget, or a full queue ("queue full").
  uint64_t submit(GenRequest req);
  // Ends a request as soon as the engine thread sees it (frees its pages); unknown ids are ignored.
  void cancel(uint64_t id);
  void shutdown();  // idempotent
  // Drops every prefix-cache entry (their pages return) before the next admission — call it
  // after the model's weights change (RL weight sync), else cached rows come from the old weights.
  void flush_prefix_cache();

  EngineMetrics metrics() const;
  const EngineOptions& options() const { return opt_; }
  int64_t pages_needed(int64_t tokens) const { return (tokens + opt_.page_size - 1) / opt_.page_size; }
  KvCache& kv() { return *kv_; }
  // Blocks until no request is queued or running (tests).
  void wait_idle();

 private:
  using Clock = std::chrono::steady_clock;
  struct Seq {
    uint64_t id;
    GenRequest req;
    SequenceState state;
    std::unique_ptr<Sampler> sampler;
    int64_t prefilled = 0;  // prompt tokens already in the cache
    int64_t cached = 0;     // of which taken from the prefix cache
    int64_t generated = 0;
    int32_t last = -1;      // token to feed at the next decode step
    bool done = false;
    Clock::time_point submitted, last_token;
    std::shared_ptr<Decisions> routes;  // record_experts: rows 0 .. (positions run so far)
    std::vector<int32_t> mask;          // record_mask: scratch for the sampler's kept set
  };
  struct CacheEntry {
    std::vector<int32_t> tokens;  // a whole number of pages
    SequenceState state;
    std::shared_ptr<const Decisions> routes;  // the experts of those rows, when a recording request made it
  };

  void loop();
  bool admit(std::unique_ptr<Seq>& s);       // false: not enough pages now
  void prefill_step(Seq& s);
  void decode_step();
  // Samples from one logits row; returns true when the sequence is finished (and reports it).
  bool take_token(Seq& s, float* logits);
  void finish(Seq& s, FinishReason r, const std::string& err = "");
  void remember_prefix(const Seq& s);
  bool evict_one_prefix();
  void drop_finished();

  Model& m_;
  EngineOptions opt_;
  std::shared_ptr<KvCache> kv_;
  int64_t vocab_ = 0, max_ctx_ = 0, k_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<std::unique_ptr<Seq>> incoming_;    // guarded by mu_
  std::vector<uint64_t> cancels_;                // guarded by mu_
  uint64_t next_id_ = 1;                         // guarded by mu_
  bool stop_ = false;                            // guarded by mu_
  bool busy_ = false;                            // guarded by mu_: the loop holds requests
  bool flush_ = false;                           // guarded by mu_: flush_prefix_cache() pending
  EngineMetrics metrics_;                        // guarded by mu_

  // Engine-thread state.
  std::deque<std::unique_ptr<Seq>> waiting_;
  std::vector<std::unique_ptr<Seq>> running_;
  std::list<CacheEntry> prefix_cache_;  // front = most recently used
  std::thread thread_;
};

}  // namespace dsa
