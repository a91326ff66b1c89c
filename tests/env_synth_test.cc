// env/: the programmatic synthesizer — determinism, coverage, validation and mutation of every task.
#include <gtest/gtest.h>

#include <set>

#include "base/error.h"
#include "env/sandbox.h"
#include "env/synth.h"
#include "env/verify.h"

namespace dsa::env {
namespace {

std::string dump(const std::vector<EnvSpec>& v) {
  std::string s;
  for (const auto& e : v) s += text::py_json_dumps(spec_to_json(e)) + "\n";
  return s;
}

struct Synth : ::testing::Test {
  static void SetUpTestSuite() {
    SynthOptions o;
    o.seed = 7;
    specs_ = new std::vector<EnvSpec>(synthesize(o, &stats_));
  }
  static void TearDownTestSuite() { delete specs_; }
  static std::vector<EnvSpec>* specs_;
  static SynthStats stats_;
};
std::vector<EnvSpec>* Synth::specs_ = nullptr;
SynthStats Synth::stats_;

TEST_F(Synth, DeterministicFromTheSeed) {
  SynthOptions o;
  o.seed = 7;
  EXPECT_EQ(dump(synthesize(o)), dump(*specs_));
  o.seed = 8;
  EXPECT_NE(dump(synthesize(o)), dump(*specs_));
  EXPECT_EQ(text::py_json_dumps(Json(generate_db("orders", 3, 0).rows[0].second)),
            text::py_json_dumps(Json(generate_db("orders", 3, 0).rows[0].second)));
}

TEST_F(Synth, CoversDomainsLevelsAndSplits) {
  std::set<std::string> domains;
  std::map<std::string, std::set<int>> levels;
  std::set<std::string> splits;
  for (const auto& e : *specs_)
    for (const auto& t : e.tasks) {
      domains.insert(e.domain);
      levels[e.domain].insert(t.difficulty);
      splits.insert(t.split);
    }
  for (const auto& d : domain_names()) {
    EXPECT_TRUE(domains.count(d)) << d;
    EXPECT_EQ(levels[d].size(), 5u) << d << " lacks a level";
  }
  for (const auto& k : reasoning_kinds()) EXPECT_TRUE(domains.count(k)) << k;
  EXPECT_GE(domain_names().size(), 6u);
  EXPECT_EQ(splits.size(), 2u);
  for (const auto& [d, lv] : stats_.by_domain)
    for (const auto& [l, s] : lv) EXPECT_EQ(s.generated, s.kept + s.invalid + s.duplicate) << d << " " << l;
  EXPECT_NE(stats_.table().find("orders"), std::string::npos);
  for (const auto& r : stats_.rejected) std::printf("rejected: %s\n", r.c_str());
}

TEST_F(Synth, EveryTaskValidatesAfterARoundTripAndMutationsFail) {
  int tasks = 0, writes = 0, chained = 0;
  for (const auto& e0 : *specs_) {
    const EnvSpec e = parse_spec_text(text::py_json_dumps(spec_to_json(e0)));
    const auto img = build_image(e);
    std::set<std::string> instr;
    for (const auto& t : e.tasks) {
      ++tasks;
      EXPECT_TRUE(instr.insert(t.instruction).second) << "duplicate: " << t.instruction;
      const Validation v = validate_task(e, img, t);
      ASSERT_TRUE(v.ok) << t.id << ": " << v.error;
      const GoldRun g = replay(e, img, t.gold_calls);
      ASSERT_TRUE(g.ok) << g.error;
      EXPECT_TRUE(verify(t, t.gold_answer, g.end_state, g.end_state).pass) << t.id;
      for (const auto& m : answer_mutations(t)) EXPECT_FALSE(verify(t, m, g.end_state, g.end_state).pass) << t.id << ": " << m;
      if (t.verify.db_state) {
        ++writes;
        EXPECT_FALSE(verify(t, t.gold_answer, img->state_hash, g.end_state).pass) << t.id;
      }
      if (t.gold_calls.size() >= 2) ++chained;
      if (e.tools.empty()) {
        EXPECT_FALSE(t.gold_reasoning.empty()) << t.id;
      }
    }
  }
  EXPECT_GE(tasks, 150);
  EXPECT_GE(writes, 20);
  EXPECT_GE(chained, 60);
}

TEST(SynthOptions, DuplicatesAreDroppedAndCounted) {
  SynthOptions o;
  o.seed = 3;
  o.domains = {"library"};
  o.envs_per_domain = 1;
  o.tasks_per_level = 40;  // more draws than distinct level-1 questions on one small database
  o.reasoning_tasks = 0;
  SynthStats st;
  const auto specs = synthesize(o, &st);
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_GT(st.by_domain["library"][1].duplicate, 0);
  std::set<std::string> instr;
  for (const auto& t : specs[0].tasks) EXPECT_TRUE(instr.insert(t.instruction).second);
  EXPECT_THROW(generate_db("casino", 1, 0), Error);
  const EnvSpec r = reasoning_env("countdown", 5, 5, false);
  for (const auto& t : r.tasks) EXPECT_TRUE(t.gold_reasoning.empty());
}

}  // namespace
}  // namespace dsa::env
