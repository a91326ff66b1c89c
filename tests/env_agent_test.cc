// env/: the agent loop — gold replay passes every task, faulty policies fail without breaking the
// loop, and the engine policy runs concurrent episodes on the continuous-batching engine.
#include <gtest/gtest.h>

#include <algorithm>

#include <chrono>
#include <filesystem>
#include <unistd.h>

#include "base/error.h"
#include "env/agent.h"
#include "env/synth.h"
#include "model/make_model.h"
#include "rl/episodes.h"
#include "ops/backends.h"
#include "text/chat_encoding.h"
#include "text/chat_input.h"

namespace dsa::env {
namespace {

const std::vector<EnvSpec>& specs() {
  static const std::vector<EnvSpec> s = [] {
    SynthOptions o;
    o.seed = 11;
    o.envs_per_domain = 1;
    o.tasks_per_level = 2;
    o.reasoning_tasks = 5;
    return synthesize(o);
  }();
  return s;
}

TEST(EnvAgent, GoldReplayPassesEveryTaskInBothModes) {
  const auto tasks = prepare_tasks(specs());
  ASSERT_GE(tasks.size(), 60u);
  GoldPolicy gold;
  for (bool thinking : {false, true}) {
    AgentOptions opt;
    opt.thinking = thinking;
    const auto eps = run_episodes(tasks, 1, gold, opt, 2);
    ASSERT_EQ(eps.size(), tasks.size());
    for (const auto& e : eps) {
      EXPECT_TRUE(e.pass) << e.task_id << " " << e.end << " " << e.detail << " " << (e.failures.empty() ? "" : e.failures[0]);
      EXPECT_EQ(e.end, "answer");
      EXPECT_EQ(e.tool_errors, 0);
      // The conversation is a valid V3.2 conversation, and in thinking mode the reasoning of every
      // tool turn is still in the prompt (it is dropped only before a new user message).
      const std::string prompt = text::encode_messages(e.messages, {.thinking = thinking});
      if (thinking && e.tool_calls > 0) EXPECT_NE(prompt.find("Step 1: I call"), std::string::npos) << prompt;
      if (e.tool_calls > 0) EXPECT_NE(prompt.find("<function_results>"), std::string::npos);
    }
  }
}

TEST(EnvAgent, FaultyPoliciesFailEveryTaskWithoutBreakingTheLoop) {
  const auto tasks = prepare_tasks(specs());
  AgentOptions opt;
  opt.max_turns = 6;
  for (auto mode : {FaultyPolicy::kUnknownTool, FaultyPolicy::kBadArguments, FaultyPolicy::kMalformed,
                    FaultyPolicy::kWrongAnswer, FaultyPolicy::kNeverStops, FaultyPolicy::kMixed}) {
    FaultyPolicy bad(mode);
    const auto eps = run_episodes(tasks, 1, bad, opt, 2);
    int errors_seen = 0;
    for (const auto& e : eps) {
      EXPECT_FALSE(e.pass) << "mode " << int(mode) << " passed " << e.task_id << ": " << e.final_answer;
      errors_seen += e.tool_errors;
      if (mode == FaultyPolicy::kMalformed) EXPECT_EQ(e.end, "malformed");
      if (mode == FaultyPolicy::kNeverStops && !specs().empty() && e.tool_calls > 0) EXPECT_EQ(e.end, "max_turns");
    }
    if (mode == FaultyPolicy::kUnknownTool || mode == FaultyPolicy::kBadArguments) {
      EXPECT_GT(errors_seen, 0);
    }
  }
  // The error result is what the model sees next.
  FaultyPolicy unknown(FaultyPolicy::kUnknownTool);
  const Episode e = run_episode(tasks[0], unknown, opt);
  ASSERT_GE(e.messages.size(), 4u);
  EXPECT_EQ(e.messages[3]["role"], "tool");
  EXPECT_NE(e.messages[3]["content"].get<std::string>().find("error: unknown tool 'drop_database'"), std::string::npos);
}

TEST(EnvAgent, EnginePolicyRunsConcurrentEpisodesAndRecordsLogprobs) {
  std::string tpath;
  try {
    tpath = text::default_tokenizer_path();
  } catch (const Error&) {
    GTEST_SKIP() << "no tokenizer.json (scripts/fetch_tokenizer.sh)";
  }
  const text::Tokenizer tok = text::Tokenizer::from_file(tpath);
  const std::string dir = std::string(DSA_BINARY_DIR) + "/test_models/env-demo-" + std::to_string(::getpid());
  MakeModelOptions mo;
  mo.preset = "demo";
  mo.out_dir = dir;
  mo.layers = 1;  // the real vocabulary is what matters here; one layer keeps the test fast
  mo.mtp = false;
  auto t0 = std::chrono::steady_clock::now();
  make_model(mo);
  std::printf("make_model demo: %.2f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  {
    auto model = Model::load(dir, ops::cpu_ops(), [](const std::string&) {});
    EngineOptions eo;
    eo.kv_pages = 256;
    eo.max_batch = 4;
    eo.prewarm_kv = false;
    Engine engine(*model, eo);
    EnginePolicy pol(engine, tok, int32_t(model->config().eos_token_id), SamplingParams{.temperature = 1.0f, .top_p = 0.9f, .seed = 5}, true);
    auto tasks = prepare_tasks(specs());
    tasks.resize(3);
    AgentOptions opt;
    opt.max_turns = 2;
    opt.max_turn_tokens = 4;
    const auto eps = run_episodes(tasks, 1, pol, opt, 4);
    int64_t sampled = 0;
    for (const auto& e : eps) {
      EXPECT_FALSE(e.end.empty());
      EXPECT_NE(e.end, "policy_error") << e.detail;
      ASSERT_FALSE(e.records.empty());
      // The episode as one GRPO sample (rl/episodes.h): every turn extends the history.
      rl::Sample smp;
      ASSERT_TRUE(rl::episode_sample(e, smp)) << e.task_id;
      size_t n = 0;
      for (const auto& r : e.records) n += r.tokens.size();
      EXPECT_EQ(size_t(std::count(smp.loss_mask.begin(), smp.loss_mask.end(), 1)), n);
      EXPECT_EQ(smp.experts->layers.size(), e.records.back().experts->layers.size());
      for (const auto& r : e.records) {
        EXPECT_FALSE(r.prompt.empty());
        EXPECT_EQ(r.logprobs.size(), r.tokens.size());
        EXPECT_EQ(r.loss_mask.size(), r.tokens.size());
        ASSERT_EQ(r.logprobs_kept.size(), r.tokens.size());
        for (size_t i = 0; i < r.tokens.size(); ++i) {
          EXPECT_LE(r.logprobs[i], 0.0);
          // Renormalised over a subset of the vocabulary: never below the full log-prob.
          EXPECT_GE(r.logprobs_kept[i], r.logprobs[i]);
          EXPECT_LE(r.logprobs_kept[i], 0.0);
        }
        // Keep-sampling-mask rows (CSR), each holding its sample unless nothing was cut; the
        // experts record spans every position the model ran on.
        ASSERT_EQ(r.mask_offsets.size(), r.tokens.size() + 1);
        EXPECT_EQ(r.mask_offsets.back(), int64_t(r.mask_ids.size()));
        for (size_t i = 0; i < r.tokens.size(); ++i) {
          const auto b = r.mask_ids.begin() + r.mask_offsets[i], en = r.mask_ids.begin() + r.mask_offsets[i + 1];
          if (b != en) EXPECT_TRUE(std::binary_search(b, en, r.tokens[i])) << "token " << i;
        }
        ASSERT_TRUE(r.experts);
        const Json j = r.to_json();
        EXPECT_EQ(j["sampling_mask"].size(), r.tokens.size());
        EXPECT_TRUE(j.contains("experts"));
        sampled += int64_t(r.tokens.size());
      }
    }
    EXPECT_GT(sampled, 0);
    EXPECT_GE(int64_t(engine.metrics().generated_tokens), sampled);
    engine.shutdown();
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace dsa::env
