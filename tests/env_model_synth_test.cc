// env/: the model-driven synthesizer against a scripted chat endpoint — what the model is told
// after each failed reply (the validator's own error text), what is kept, when it gives up.
#include <gtest/gtest.h>

#include "base/error.h"
#include "env/model_synth.h"
#include "env/verify.h"

namespace dsa::env {
namespace {

// Replies in order; records the messages of every call.
struct ScriptedEndpoint : ChatEndpoint {
  std::vector<ChatReply> replies;
  std::vector<Json> calls;
  bool throw_when_done = false;
  ChatReply complete(const Json& messages) override {
    calls.push_back(messages);
    if (calls.size() > replies.size()) {
      if (throw_when_done) throw Error("connection refused");
      ADD_FAILURE() << "the pipeline asked for more replies than scripted";
      return {};
    }
    return replies[calls.size() - 1];
  }
};

Json example() { return Json::parse(model_synth_example_spec()); }

std::string dump(const Json& j) { return j.dump(); }

// The example with its gold answer no longer mentioning the verified loan id.
std::string gold_fails() {
  Json j = example();
  j["tasks"][0]["gold"]["answer"] = "Loan 8 (Dune, Ada) is now marked as returned.";
  return dump(j);
}

// A harder version: a conditional write after counting Ada's open loans over two books.
std::string harder() {
  Json j = example();
  j["tasks"][0] = Json::parse(R"({"id": "return-messiah-if-two", "difficulty": 5,
    "instruction": "If Ada has more than one open loan of the Dune books, record the return of her Dune Messiah loan; tell me the loan id and how many she had open.",
    "gold": {"calls": [{"name": "find_books", "arguments": {"title": "Dune"}},
                       {"name": "list_loans", "arguments": {"book_id": 1}},
                       {"name": "list_loans", "arguments": {"book_id": 2}},
                       {"name": "return_loan", "arguments": {"loan_id": 8}}],
             "answer": "Ada had 2 open loans; loan 8 (Dune Messiah) is now returned."},
    "verify": {"db_state": true, "answer_contains": ["loan 8"]}})");
  return dump(j);
}

std::string user_text(const Json& m) {
  EXPECT_EQ(m["role"], "user");
  return m["content"].get<std::string>();
}

TEST(ModelSynth, ExampleInThePromptValidates) {
  EnvSpec s;
  EXPECT_EQ(check_spec_reply(model_synth_example_spec(), 1, 1, {}, &s), "");
  EXPECT_EQ(s.tasks.size(), 1u);
  EXPECT_NE(model_synth_system_prompt().find(model_synth_example_spec()), std::string::npos);
  EXPECT_EQ(check_spec_reply(harder(), 5, 1, {}, nullptr), "");
}

TEST(ModelSynth, ExtractsFencedAndSurroundedJson) {
  const std::string spec = model_synth_example_spec();
  EXPECT_EQ(extract_json_object("Here it is:\n```json\n" + spec + "\n```\nDone."), spec);
  EXPECT_EQ(extract_json_object("Sure! " + spec + " Hope this helps."), spec);
  EXPECT_EQ(extract_json_object("no object here"), "");
  EXPECT_EQ(check_spec_reply("no object here", 1, 1, {}, nullptr).rfind("the reply contains no JSON object", 0), 0u);
}

TEST(ModelSynth, ReportsEveryProblemOfASpec) {
  Json j = example();
  j["tools"][0]["sql"] = "PRAGMA table_info(books)";
  std::string e = check_spec_reply(dump(j), 1, 1, {}, nullptr);
  EXPECT_NE(e.find("spec: tools[0].sql: not allowed"), std::string::npos) << e;
  EXPECT_EQ(e.find(".cc:"), std::string::npos) << "source locations leak into the model's feedback: " << e;
  j = example();
  j["tasks"][0]["gold"]["calls"][2]["arguments"] = {{"loan_id", "seven"}};
  e = check_spec_reply(dump(j), 5, 2, {}, nullptr);
  EXPECT_NE(e.find("tasks: 1 task(s), at least 2 required"), std::string::npos) << e;
  EXPECT_NE(e.find("tasks[0] (return-dune-ada): difficulty is 4, this spec must be at difficulty 5 or above"), std::string::npos) << e;
  EXPECT_NE(e.find("tasks[0] (return-dune-ada): the gold solution fails: call 2 (return_loan): error:"), std::string::npos) << e;
  j = example();
  j["tasks"][0]["verify"] = {{"db_state", true}, {"answer_contains", {"returned"}}};
  j["tasks"][0]["gold"]["calls"].erase(2);  // no write left: db_state cannot be checked
  e = check_spec_reply(dump(j), 1, 1, {}, nullptr);
  EXPECT_NE(e.find("db_state is checked but the gold solution makes no write"), std::string::npos) << e;
  e = check_spec_reply(model_synth_example_spec(), 1, 1, {example()["tasks"][0]["instruction"].get<std::string>()}, nullptr);
  EXPECT_NE(e.find("repeats a task of an earlier spec"), std::string::npos) << e;
}

TEST(ModelSynth, FeedsErrorsBackUntilValidThenHardens) {
  ScriptedEndpoint ep;
  const std::string malformed = R"({"version": 1, "name": "x", "tools": [)";
  ep.replies = {{malformed}, {gold_fails()}, {"```json\n" + model_synth_example_spec() + "\n```"}, {harder()}};
  ModelSynthOptions o;
  o.rounds = 3;
  o.levels = 2;
  o.start_level = 4;
  o.topic = "a small library";
  std::vector<SynthRound> log;
  const ModelSynthResult r = synthesize_with_model(ep, o, [&](const SynthRound& x) { log.push_back(x); });
  ASSERT_EQ(ep.calls.size(), 4u);
  EXPECT_EQ(r.stopped, "");
  // The first request: the format, the level and the topic.
  EXPECT_EQ(ep.calls[0].size(), 2u);
  EXPECT_EQ(ep.calls[0][0]["role"], "system");
  EXPECT_NE(user_text(ep.calls[0][1]).find("difficulty 4 about a small library"), std::string::npos);
  // Round 1 -> 2: the JSON error, as the validator states it.
  const std::string e1 = check_spec_reply(malformed, 4, 1, {}, nullptr);
  EXPECT_EQ(e1.rfind("spec: not valid JSON:", 0), 0u) << e1;
  ASSERT_EQ(ep.calls[1].size(), 4u);
  EXPECT_EQ(ep.calls[1][2]["content"], malformed);
  const std::string f1 = user_text(ep.calls[1][3]);
  EXPECT_NE(f1.find("- " + e1), std::string::npos) << f1;
  EXPECT_NE(f1.find("round 1 of 3"), std::string::npos) << f1;
  // Round 2 -> 3: the verifier failure of the gold answer.
  const std::string f2 = user_text(ep.calls[2][5]);
  EXPECT_NE(f2.find("- tasks[0] (return-dune-ada): the gold answer fails its verifier: the answer does not mention '7'"),
            std::string::npos) << f2;
  EXPECT_EQ(f2.find("not valid JSON"), std::string::npos) << "only the current reply's problems are sent";
  // Round 3 validated -> the harder request at the next difficulty.
  const std::string f3 = user_text(ep.calls[3][7]);
  EXPECT_NE(f3.find("The spec validated (1 task(s), longest gold solution 3 call(s))"), std::string::npos) << f3;
  EXPECT_NE(f3.find("harder version at difficulty 5"), std::string::npos) << f3;
  // Kept: the two validated specs only, in order, with distinct names.
  ASSERT_EQ(r.kept.size(), 2u);
  EXPECT_EQ(r.kept[0].tasks[0].id, "return-dune-ada");
  EXPECT_EQ(r.kept[1].tasks[0].id, "return-messiah-if-two");
  EXPECT_EQ(r.kept[1].tasks[0].difficulty, 5);
  EXPECT_EQ(r.kept[0].name, "library-loans");
  EXPECT_EQ(r.kept[1].name, "library-loans-2");
  // Rounds: what failed, per level.
  ASSERT_EQ(log.size(), 4u);
  ASSERT_EQ(r.rounds.size(), 4u);
  EXPECT_FALSE(log[0].ok);
  EXPECT_EQ(log[0].error, e1);
  EXPECT_FALSE(log[1].ok);
  EXPECT_TRUE(log[2].ok);
  EXPECT_TRUE(log[3].ok);
  EXPECT_EQ(log[2].level, 4);
  EXPECT_EQ(log[2].round, 3);
  EXPECT_EQ(log[3].level, 5);
  EXPECT_EQ(log[3].round, 1);
  EXPECT_EQ(r.messages.size(), 9u);  // system, request, 3 replies + 2 fix requests, harder request, its reply
  // A kept spec survives a save and load and validates again.
  for (const auto& s : r.kept) EXPECT_EQ(check_spec_reply(spec_to_json(s).dump(), 1, 1, {}, nullptr), "");
}

TEST(ModelSynth, GivesUpAfterTheRoundBudgetAndKeepsNothing) {
  ScriptedEndpoint ep;
  ep.replies = {{gold_fails()}, {gold_fails()}, {gold_fails()}};
  ModelSynthOptions o;
  o.rounds = 3;
  o.levels = 3;
  const ModelSynthResult r = synthesize_with_model(ep, o);
  EXPECT_EQ(ep.calls.size(), 3u);
  EXPECT_TRUE(r.kept.empty());
  ASSERT_EQ(r.rounds.size(), 3u);
  for (const auto& x : r.rounds) {
    EXPECT_FALSE(x.ok);
    EXPECT_EQ(x.level, 1);
    EXPECT_NE(x.error.find("the answer does not mention '7'"), std::string::npos) << x.error;
  }
  EXPECT_EQ(r.stopped, "difficulty 1: no valid spec after 3 round(s)");
  EXPECT_EQ(r.messages.back()["role"], "assistant");  // no follow-up after the last round
}

TEST(ModelSynth, AHarderVersionMustRaiseTheDifficultyAndBeNew) {
  ScriptedEndpoint ep;
  const std::string same = model_synth_example_spec();
  ep.replies = {{same}, {same}, {same, true}};
  ModelSynthOptions o;
  o.rounds = 2;
  o.levels = 2;
  o.start_level = 4;
  const ModelSynthResult r = synthesize_with_model(ep, o);
  ASSERT_EQ(r.kept.size(), 1u);
  ASSERT_EQ(r.rounds.size(), 3u);
  EXPECT_TRUE(r.rounds[0].ok);
  EXPECT_NE(r.rounds[1].error.find("difficulty is 4, this spec must be at difficulty 5 or above"), std::string::npos);
  EXPECT_NE(r.rounds[1].error.find("repeats a task of an earlier spec"), std::string::npos);
  EXPECT_EQ(r.rounds[2].error.rfind("the reply was cut off at the endpoint's token limit", 0), 0u) << r.rounds[2].error;
  EXPECT_EQ(r.stopped, "difficulty 5: no valid spec after 2 round(s)");
}

TEST(ModelSynth, EndpointFailureStopsAndKeepsWhatValidated) {
  ScriptedEndpoint ep;
  ep.replies = {{model_synth_example_spec()}};
  ep.throw_when_done = true;
  ModelSynthOptions o;
  o.levels = 3;
  const ModelSynthResult r = synthesize_with_model(ep, o);
  EXPECT_EQ(r.kept.size(), 1u);
  EXPECT_EQ(r.stopped, "endpoint: connection refused");
  EXPECT_EQ(ep.calls.size(), 2u);
}

TEST(ModelSynth, RefusesBadOptions) {
  ScriptedEndpoint ep;
  ModelSynthOptions o;
  o.rounds = 0;
  EXPECT_THROW(synthesize_with_model(ep, o), Error);
  o = {};
  o.start_level = 3;
  o.levels = 4;
  EXPECT_THROW(synthesize_with_model(ep, o), Error);
  EXPECT_TRUE(ep.calls.empty());
}

}  // namespace
}  // namespace dsa::env
