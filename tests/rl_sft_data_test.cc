// Cold-start SFT data (rl/sft_data.h): the gold episodes of synthesized tasks, in thinking and
// non-thinking mode, become weighted documents whose weight-1 tokens are exactly each assistant
// turn's completion as the encoder renders it (and nothing of the prompt or the tool results).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "env/synth.h"
#include "rl/sft_data.h"
#include "text/chat_encoding.h"
#include "text/chat_input.h"
#include "train/data/shard.h"

namespace dsa {
namespace {

// TaskRefs point into their specs: kept alive for the whole test binary.
const std::vector<env::EnvSpec>& small_specs() {
  static const std::vector<env::EnvSpec> s = [] {
    env::SynthOptions o;
    o.seed = 5;
    o.envs_per_domain = 1;
    o.tasks_per_level = 1;
    o.reasoning_tasks = 2;
    return env::synthesize(o);
  }();
  return s;
}

TEST(SftData, WeightsMarkExactlyTheAssistantTurns) {
  const text::Tokenizer tok = text::Tokenizer::from_file(text::default_tokenizer_path());
  const auto tasks = env::prepare_tasks(small_specs());
  ASSERT_GT(tasks.size(), 10u);
  env::GoldPolicy gold;
  int64_t checked = 0, multi_turn = 0;
  for (bool thinking : {true, false}) {
    env::AgentOptions ao;
    ao.thinking = thinking;
    const auto eps = env::run_episodes(tasks, 1, gold, ao, 2);
    for (const env::Episode& e : eps) {
      ASSERT_TRUE(e.pass) << e.task_id << ": " << e.end;
      const rl::SftExample ex = rl::sft_example(tok, e.messages, thinking);
      ASSERT_EQ(ex.tokens.size(), ex.weights.size());
      std::vector<std::string> want;
      for (const auto& m : e.messages)
        if (m.value("role", "") == "assistant") want.push_back(env::render_completion(m, thinking));
      EXPECT_EQ(ex.turns, int64_t(want.size()));
      multi_turn += want.size() > 1;
      // The weight-1 runs, decoded, are the rendered completions in order.
      std::vector<std::string> got;
      int64_t ones = 0;
      for (size_t i = 0; i < ex.tokens.size(); ++i) {
        if (ex.weights[i] == 0.0f) continue;
        ASSERT_EQ(ex.weights[i], 1.0f);
        size_t j = i;
        while (j < ex.tokens.size() && ex.weights[j] == 1.0f) ++j;
        got.push_back(tok.decode(std::span<const int32_t>(ex.tokens.data() + i, j - i)));
        ones += int64_t(j - i);
        i = j - 1;
      }
      EXPECT_EQ(got, want) << e.task_id;
      EXPECT_EQ(ones, ex.assistant_tokens);
      EXPECT_LT(ones, int64_t(ex.tokens.size()));
      // Every completion ends the turn with the end-of-sentence id.
      EXPECT_EQ(ex.tokens.back(), tok.token_to_id(text::kEos));
      ++checked;
    }
  }
  EXPECT_GT(multi_turn, 0);
  std::printf("%lld gold episodes checked (%lld with several assistant turns)\n", (long long)checked, (long long)multi_turn);
  // A conversation that does not end with the assistant is refused.
  env::Json bad = env::Json::array({{{"role", "user"}, {"content", "hi"}}});
  EXPECT_THROW(rl::sft_example(tok, bad, false), Error);
}

TEST(SftData, ShardHoldsOneWeightedDocumentPerPassingEpisodeAndMode) {
  const text::Tokenizer tok = text::Tokenizer::from_file(text::default_tokenizer_path());
  const auto tasks = env::prepare_tasks(small_specs());
  int64_t train_tasks = 0;
  for (const auto& t : tasks) train_tasks += t.task->split == "train";
  const std::string path = (std::filesystem::temp_directory_path() / "dsa_sft_test.shard").string();
  rl::SftDataOptions o;
  const rl::SftDataStats st = rl::write_sft_shard(tasks, tok, path, o);
  EXPECT_EQ(st.tasks, train_tasks);
  EXPECT_EQ(st.episodes, 2 * train_tasks);
  EXPECT_EQ(st.skipped, 0);
  EXPECT_EQ(st.documents, st.episodes);
  const train::ShardReader r = train::ShardReader::open(path);
  EXPECT_EQ(int64_t(r.n_docs()), st.documents);
  EXPECT_EQ(int64_t(r.n_tokens()), st.tokens);
  ASSERT_TRUE(r.has_weights());
  double wsum = 0;
  for (uint64_t i = 0; i < r.n_tokens(); ++i) wsum += r.weight(i);
  EXPECT_EQ(int64_t(wsum), st.assistant_tokens);
  EXPECT_EQ(r.sources().size(), 2u);
  std::filesystem::remove(path);
  o.split = "no-such-split";
  EXPECT_THROW(rl::write_sft_shard(tasks, tok, path, o), Error);
}

}  // namespace
}  // namespace dsa
