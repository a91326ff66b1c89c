// Continuous-batching engine on the tiny preset: batching equivalence, admission under the KV
// budget, queueing, prefix reuse, cancellation, stop conditions.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <thread>

#include "runtime/engine.h"
#include "test_util.h"
#include "text/chat_input.h"
// The server's text side (src/app is not a library): compiled into this test directly.
#include "../src/app/http_generation.cc"

namespace dsa {
namespace {

std::unique_ptr<Model> tiny() {
  return Model::load(test::tiny_model_dir(), ops::ref_ops(), [](const std::string&) {});
}

std::vector<int32_t> prompt(int n, int salt) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back(int32_t((uint64_t(i) * 2654435761u + salt * 977u) % 1000));
  return p;
}

struct Outcome {
  std::vector<int32_t> tokens;
  GenResult result;
};

// Submits a request; the future resolves when the engine reports the end.
std::future<Outcome> submit(Engine& e, std::vector<int32_t> p, int64_t max_tokens, float temp, uint64_t seed,
                            uint64_t* id = nullptr) {
  auto out = std::make_shared<Outcome>();
  auto prom = std::make_shared<std::promise<Outcome>>();
  GenRequest r;
  r.prompt = std::move(p);
  r.max_tokens = max_tokens;
  r.sampling.temperature = temp;
  r.sampling.top_p = 0.9f;
  r.sampling.seed = seed;
  r.on_token = [out](int32_t t) {
    out->tokens.push_back(t);
    return true;
  };
  r.on_done = [out, prom](const GenResult& g) {
    out->result = g;
    prom->set_value(*out);
  };
  const uint64_t i = e.submit(std::move(r));
  if (id) *id = i;
  return prom->get_future();
}

Outcome alone(Model& m, const std::vector<int32_t>& p, int64_t max_tokens, float temp, uint64_t seed) {
  EngineOptions o;
  o.page_size = 16;
  o.kv_pages = 64;
  o.prefix_cache_entries = 0;
  Engine e(m, o);
  return submit(e, p, max_tokens, temp, seed).get();
}

TEST(Engine, BatchedOutputsEqualEachRequestAlone) {
  auto m = tiny();
  EngineOptions o;
  o.page_size = 16;
  o.kv_pages = 128;
  o.max_batch = 8;
  o.prefill_chunk = 24;  // several prefill chunks interleaved with decode steps
  Engine e(*m, o);
  std::vector<std::future<Outcome>> fs;
  const int lens[] = {5, 40, 17, 64, 33, 2, 50, 9};
  for (int i = 0; i < 8; ++i) fs.push_back(submit(e, prompt(lens[i], i), 12 + i, i % 2 ? 0.8f : 0.0f, 100 + i));
  for (int i = 0; i < 8; ++i) {
    const Outcome b = fs[i].get();
    const Outcome s = alone(*m, prompt(lens[i], i), 12 + i, i % 2 ? 0.8f : 0.0f, 100 + i);
    EXPECT_EQ(b.tokens, s.tokens) << "request " << i;
    EXPECT_EQ(b.result.reason, FinishReason::kLength);
    EXPECT_EQ(b.result.generated, 12 + i);
  }
  e.wait_idle();
  EXPECT_GT(e.metrics().decode_steps, 0u);
  EXPECT_LT(e.metrics().decode_steps, uint64_t(8 * 12));  // steps were shared
}

// With absorbed prefill every prompt row goes through decode's attention: the engine's chunked,
// batched run must give exactly what one token at a time through Model::forward gives.
TEST(Engine, AbsorbedPrefillMatchesTokenByTokenDecode) {
  auto m = tiny();
  EngineOptions o;
  o.page_size = 16;
  o.kv_pages = 128;
  o.max_batch = 4;
  o.prefill_chunk = 24;
  o.absorbed_prefill = true;
  Engine e(*m, o);
  const int lens[] = {70, 9, 41};
  std::vector<std::future<Outcome>> fs;
  for (int i = 0; i < 3; ++i) fs.push_back(submit(e, prompt(lens[i], 30 + i), 6, 0.0f, 1));
  for (int i = 0; i < 3; ++i) {
    const Outcome b = fs[i].get();
    auto st = m->new_sequence();
    std::vector<float> logits;
    for (int32_t t : prompt(lens[i], 30 + i)) logits = m->forward(st, {t});
    std::vector<int32_t> want;
    const int64_t V = m->config().vocab_size;
    for (int k = 0; k < 6; ++k) {
      const int32_t t = int32_t(std::max_element(logits.begin(), logits.begin() + V) - logits.begin());
      want.push_back(t);
      if (k < 5) logits = m->forward(st, {t});
    }
    EXPECT_EQ(b.tokens, want) << "request " << i;
  }
}

// What an RL rollout records of one request.
struct Recorded {
  std::vector<int32_t> sampled;           // every sampled id, a stop id included
  std::vector<double> logprobs, logprobs_kept;
  std::vector<std::vector<int32_t>> masks;
  GenResult result;
};

std::future<Recorded> submit_recording(Engine& e, std::vector<int32_t> p, int64_t max_tokens, int64_t top_k,
                                        uint64_t seed, bool record = true) {
  auto out = std::make_shared<Recorded>();
  auto prom = std::make_shared<std::promise<Recorded>>();
  GenRequest r;
  r.prompt = std::move(p);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 1.0f;
  r.sampling.top_k = top_k;
  r.sampling.seed = seed;
  r.record_mask = r.record_experts = record;
  r.on_sample = [out](const SampleInfo& si) {
    out->sampled.push_back(si.token);
    out->logprobs.push_back(si.logprob);
    out->logprobs_kept.push_back(si.logprob_kept);
    out->masks.push_back(si.mask ? *si.mask : std::vector<int32_t>{});
  };
  r.on_done = [out, prom](const GenResult& g) {
    out->result = g;
    prom->set_value(*out);
  };
  e.submit(std::move(r));
  return prom->get_future();
}

// Keep-routing and keep-sampling-mask records: the experts of every position the model ran
// (prefix-cache rows included, batched decode rows split per request) equal those of feeding
// the same ids one at a time; each mask is the top-k of that step's logits and holds its sample.
TEST(Engine, RecordsExpertsAndSamplingMasksThroughPrefixCacheAndBatching) {
  auto m = tiny();
  const ModelConfig& c = m->config();
  const int64_t V = c.vocab_size, k = c.num_experts_per_tok, topk = 6;
  EngineOptions o;
  o.page_size = 16;
  o.kv_pages = 128;
  o.max_batch = 4;
  o.prefill_chunk = 24;
  o.absorbed_prefill = true;  // prompt rows bit-identical to one token at a time
  Engine e(*m, o);
  auto check = [&](const std::vector<int32_t>& p, const Recorded& r, const char* what) {
    SCOPED_TRACE(what);
    const int64_t P = int64_t(p.size()), G = r.result.generated;
    ASSERT_EQ(int64_t(r.sampled.size()), G);
    ASSERT_TRUE(r.result.experts);
    std::vector<int32_t> seq = p;
    seq.insert(seq.end(), r.sampled.begin(), r.sampled.end() - 1);  // the last sample is never fed
    auto st = m->new_sequence();
    int moe = 0;
    for (int64_t t = 0; t < P + G - 1; ++t) {
      Decisions d;
      ForwardOptions fo;
      fo.record = &d;
      const std::vector<float> z = m->forward(st, {seq[size_t(t)]}, fo);
      for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
        const auto& want = d.layers[size_t(l)].experts;
        const auto& got = r.result.experts->layers[size_t(l)].experts;
        if (want.empty()) {
          EXPECT_TRUE(got.empty()) << "dense layer " << l;
          continue;
        }
        moe += t == 0;
        ASSERT_EQ(int64_t(got.size()), (P + G - 1) * k) << "layer " << l;
        EXPECT_TRUE(std::equal(want.begin(), want.end(), got.begin() + t * k)) << "layer " << l << " position " << t;
      }
      if (t < P - 1) continue;
      const int64_t i = t - (P - 1);  // sample i was drawn from these logits
      std::vector<int32_t> order(static_cast<size_t>(V));
      for (int64_t v = 0; v < V; ++v) order[size_t(v)] = int32_t(v);
      std::partial_sort(order.begin(), order.begin() + topk, order.end(),
                        [&](int32_t a, int32_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); });
      std::vector<int32_t> top(order.begin(), order.begin() + topk);
      std::sort(top.begin(), top.end());
      EXPECT_EQ(r.masks[size_t(i)], top) << "sample " << i;
      EXPECT_TRUE(std::binary_search(top.begin(), top.end(), r.sampled[size_t(i)]));
      // The trainer's log-softmax of the same logits, bit for bit; and renormalised over the mask.
      EXPECT_EQ(r.logprobs[size_t(i)], double(z[r.sampled[size_t(i)]]) - log_sum_exp(z.data(), V));
      double kept = -INFINITY;
      for (int32_t v : top) kept = std::max(kept, double(z[v]));
      double sum = 0;
      for (int32_t v : top) sum += std::exp(double(z[v]) - kept);
      EXPECT_NEAR(r.logprobs_kept[size_t(i)], double(z[r.sampled[size_t(i)]]) - kept - std::log(sum), 1e-9);
      EXPECT_GT(r.logprobs_kept[size_t(i)], r.logprobs[size_t(i)]);
    }
    EXPECT_GT(moe, 0);
  };
  std::vector<int32_t> a = prompt(50, 7), b = a, c2 = prompt(29, 8);
  b.resize(40);
  b.push_back(3);
  b.push_back(4);
  const Recorded ra = submit_recording(e, a, 7, topk, 1).get();
  EXPECT_EQ(ra.result.cached_tokens, 0);
  check(a, ra, "first request");
  auto fb = submit_recording(e, b, 9, topk, 2), fc = submit_recording(e, c2, 5, topk, 3);  // decoded together
  const Recorded rb = fb.get(), rc = fc.get();
  EXPECT_EQ(rb.result.cached_tokens, 32);  // two pages of a's prompt, with their experts
  check(b, rb, "prefix-cache hit");
  check(c2, rc, "batched");
  // A prefix cached by a request that did not record has no experts: a recording request
  // prefills it again (and its record then goes with the cache entry).
  std::vector<int32_t> d = prompt(45, 9);
  EXPECT_FALSE(submit_recording(e, d, 3, topk, 4, false).get().result.experts);
  const Recorded rd = submit_recording(e, d, 3, topk, 5).get();
  EXPECT_EQ(rd.result.cached_tokens, 0);
  check(d, rd, "after a non-recording request");
  const Recorded rd2 = submit_recording(e, d, 3, topk, 6).get();
  EXPECT_EQ(rd2.result.cached_tokens, 32);
  check(d, rd2, "cache entry with experts attached");
}

TEST(Engine, RequestsBeyondTheBudgetAreRefusedOthersQueue) {
  auto m = tiny();
  EngineOptions o;
  o.page_size = 16;
  o.kv_pages = 8;  // 128 tokens in all
  o.prefix_cache_entries = 0;
  Engine e(*m, o);
  try {
    submit(e, prompt(100, 1), 40, 0, 0);  // 9 pages: can never fit
    FAIL() << "no error";
  } catch (const Error& ex) {
    EXPECT_NE(std::string(ex.what()).find("KV"), std::string::npos) << ex.what();
  }
  EXPECT_EQ(e.metrics().requests_rejected, 1u);
  // Each needs 4 pages (40 + 20 tokens): at most two at a time, the rest wait in the queue.
  std::vector<std::future<Outcome>> fs;
  for (int i = 0; i < 5; ++i) fs.push_back(submit(e, prompt(40, i), 20, 0, 0));
  bool saw_queue = false;
  for (int k = 0; k < 5000 && !saw_queue; ++k) {  // the first prefill may take a while on a busy machine
    const EngineMetrics mm = e.metrics();
    EXPECT_LE(mm.kv_pages_in_use, 8);
    EXPECT_LE(mm.running, 2);
    saw_queue = mm.queue_length > 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_TRUE(saw_queue);
  for (int i = 0; i < 5; ++i) {
    const Outcome b = fs[i].get();
    EXPECT_EQ(b.tokens, alone(*m, prompt(40, i), 20, 0, 0).tokens) << i;
  }
  e.wait_idle();
  EXPECT_EQ(e.kv().pages_in_use(), 0);
}

TEST(Engine, PrefixCacheReusesFullPagesAndKeepsResults) {
  auto m = tiny();
  EngineOptions o;
  o.page_size = 16;
  o.kv_pages = 64;
  Engine e(*m, o);
  std::vector<int32_t> a = prompt(50, 3), b = a;
  b.resize(37);
  b.push_back(7);
  b.push_back(8);  // shares 37 tokens: two full pages (32 tokens) reusable
  const Outcome oa = submit(e, a, 6, 0.7f, 5).get();
  EXPECT_EQ(oa.result.cached_tokens, 0);
  const Outcome ob = submit(e, b, 6, 0.7f, 5).get();
  EXPECT_EQ(ob.result.cached_tokens, 32);
  EXPECT_EQ(ob.tokens, alone(*m, b, 6, 0.7f, 5).tokens);
  const Outcome oa2 = submit(e, a, 6, 0.7f, 5).get();  // whole prompt cached: 48 of 50 (2 left to prefill)
  EXPECT_EQ(oa2.result.cached_tokens, 48);
  EXPECT_EQ(oa2.tokens, oa.tokens);
  e.wait_idle();
  EXPECT_EQ(e.metrics().prefix_cache_hits, 2u);
  EXPECT_GT(e.kv().pages_in_use(), 0);  // held by the cache
  // After a flush (weights changed) nothing is reused and the cache's pages are back.
  e.flush_prefix_cache();
  for (int i = 0; i < 1000 && e.metrics().kv_pages_in_use > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_EQ(e.metrics().kv_pages_in_use, 0);
  EXPECT_EQ(submit(e, a, 6, 0.7f, 5).get().result.cached_tokens, 0);
}

TEST(Engine, PrefixCacheIsEvictedUnderMemoryPressure) {
  auto m = tiny();
  EngineOptions o;
  o.page_size = 16;
  o.kv_pages = 8;
  Engine e(*m, o);
  submit(e, prompt(64, 1), 4, 0, 0).get();  // leaves 4 cached pages
  e.wait_idle();
  EXPECT_EQ(e.kv().pages_in_use(), 4);
  const Outcome big = submit(e, prompt(100, 2), 20, 0, 0).get();  // needs 8 pages: cache must go
  EXPECT_EQ(big.result.reason, FinishReason::kLength);
  EXPECT_EQ(big.tokens, alone(*m, prompt(100, 2), 20, 0, 0).tokens);
}

TEST(Engine, CancellationFreesPagesAtOnce) {
  auto m = tiny();
  EngineOptions o;
  o.page_size = 16;
  o.kv_pages = 64;
  o.prefix_cache_entries = 0;
  Engine e(*m, o);
  uint64_t id = 0;
  auto f = submit(e, prompt(30, 4), 500, 0, 0, &id);
  while (e.metrics().generated_tokens < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_GT(e.kv().pages_in_use(), 0);
  e.cancel(id);
  const Outcome c = f.get();
  EXPECT_EQ(c.result.reason, FinishReason::kCancelled);
  EXPECT_LT(c.result.generated, 500);
  e.wait_idle();
  EXPECT_EQ(e.kv().pages_in_use(), 0);
  EXPECT_EQ(e.metrics().requests_finished[int(FinishReason::kCancelled)], 1u);
}

TEST(Engine, StopIdsAndCallbackStopEndTheRequest) {
  auto m = tiny();
  EngineOptions o;
  o.page_size = 16;
  o.kv_pages = 64;
  Engine e(*m, o);
  const Outcome free_run = submit(e, prompt(10, 5), 8, 0, 0).get();
  ASSERT_EQ(free_run.tokens.size(), 8u);
  // Stop id = the 4th greedy token: generation ends there, the stop id is not reported.
  auto prom = std::make_shared<std::promise<GenResult>>();
  auto toks = std::make_shared<std::vector<int32_t>>();
  GenRequest r;
  r.prompt = prompt(10, 5);
  r.max_tokens = 8;
  r.stop_ids = {free_run.tokens[3]};
  r.on_token = [toks](int32_t t) {
    toks->push_back(t);
    return toks->size() < 100;
  };
  r.on_done = [prom](const GenResult& g) { prom->set_value(g); };
  e.submit(std::move(r));
  const GenResult g = prom->get_future().get();
  EXPECT_EQ(g.reason, FinishReason::kStop);
  EXPECT_EQ(g.generated, 4);
  EXPECT_EQ(*toks, std::vector<int32_t>(free_run.tokens.begin(), free_run.tokens.begin() + 3));
  // Bad requests are refused synchronously.
  GenRequest bad;
  bad.prompt = {5000};
  EXPECT_THROW(e.submit(std::move(bad)), Error);
  GenRequest empty;
  EXPECT_THROW(e.submit(std::move(empty)), Error);
}

TEST(Engine, ShutdownEndsPendingRequests) {
  auto m = tiny();
  EngineOptions o;
  o.page_size = 16;
  o.kv_pages = 64;
  auto e = std::make_unique<Engine>(*m, o);
  auto f = submit(*e, prompt(20, 6), 900, 0, 0);
  e->shutdown();
  const Outcome out = f.get();
  EXPECT_EQ(out.result.reason, FinishReason::kError);
  EXPECT_LT(out.result.generated, 900);
}

// Feeds the tokens of a completion text through a Generation as the engine would.
struct Fed {
  std::string streamed_reasoning, streamed_content;
  app::FinalMessage final;
};
Fed feed(const text::Tokenizer& tok, const std::string& completion, bool thinking, std::vector<std::string> stops,
         FinishReason reason = FinishReason::kStop) {
  app::Generation g(tok, true, thinking, std::move(stops));
  Fed f;
  int64_t n = 0;
  for (int32_t t : tok.encode(completion)) {
    ++n;
    const bool go_on = g.on_token(t);
    const app::TextDelta d = g.take_delta();
    f.streamed_reasoning += d.reasoning;
    f.streamed_content += d.content;
    if (!go_on) break;
  }
  g.on_done(GenResult{reason, "", 3, n, 0, nullptr});
  const app::TextDelta d = g.take_delta();
  f.streamed_reasoning += d.reasoning;
  f.streamed_content += d.content;
  f.final = g.final_message();
  return f;
}

TEST(ServerText, ToolCallsReasoningAndStopStrings) {
  std::string path;
  try {
    path = text::default_tokenizer_path();
  } catch (const Error&) {
    GTEST_SKIP() << "no tokenizer.json (scripts/fetch_tokenizer.sh)";
  }
  const text::Tokenizer tok = text::Tokenizer::from_file(path);
  const std::string calls =
      "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"
      "<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n"
      "<｜DSML｜parameter name=\"days\" string=\"false\">2</｜DSML｜parameter>\n"
      "</｜DSML｜invoke>\n</｜DSML｜function_calls>";
  Fed f = feed(tok, "Let me look it up.</think>Checking." + calls, true, {});
  EXPECT_TRUE(f.final.parsed);
  EXPECT_EQ(f.final.finish_reason, "tool_calls");
  EXPECT_EQ(f.final.reasoning_content, "Let me look it up.");
  EXPECT_EQ(f.final.content, "Checking.");
  ASSERT_EQ(f.final.tool_calls.size(), 1u);
  EXPECT_EQ(f.final.tool_calls[0].name, "get_weather");
  EXPECT_EQ(f.final.tool_calls[0].arguments, "{\"city\": \"Paris\", \"days\": 2}");
  // The stream shows reasoning and content apart, never the DSML block or </think>.
  EXPECT_EQ(f.streamed_reasoning, "Let me look it up.");
  EXPECT_EQ(f.streamed_content, "Checking.");
  // Chat mode, plain answer; a stop string cuts the text and is never streamed.
  f = feed(tok, "The answer is 42. END more text", false, {"END"});
  EXPECT_EQ(f.final.content, "The answer is 42. ");
  EXPECT_EQ(f.streamed_content, "The answer is 42. ");
  EXPECT_EQ(f.final.finish_reason, "stop");
  // Cut by max_tokens inside the reasoning: returned as reasoning, finish "length".
  f = feed(tok, "thinking still", true, {}, FinishReason::kLength);
  EXPECT_FALSE(f.final.parsed);
  EXPECT_EQ(f.final.reasoning_content, "thinking still");
  EXPECT_EQ(f.final.finish_reason, "length");
}

}  // namespace
}  // namespace dsa
