// Retrieval tasks (train/data/retrieval.h): determinism, token budgets, depth placement, unique
// keys, bad input, the exact-answer scorer; the teacher-forced model check on the tiny preset.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "base/error.h"
#include "ops/backends.h"
#include "test_util.h"
#include "text/tokenizer.h"
#include "train/data/retrieval.h"
#include "train/retrieval_eval.h"

namespace dsa::train {
namespace {

const std::string kTokenizer =
    std::string(DSA_SOURCE_DIR) + "/third_party/tokenizer/tokenizer.json";

const text::Tokenizer* tokenizer() {
  static std::unique_ptr<text::Tokenizer> t;
  if (!t && std::filesystem::exists(kTokenizer))
    t = std::make_unique<text::Tokenizer>(text::Tokenizer::from_file(kTokenizer));
  return t.get();
}

#define NEED_TOKENIZER()                    \
  const text::Tokenizer* tok = tokenizer(); \
  if (!tok) GTEST_SKIP() << "no tokenizer at " << kTokenizer;

// key -> value of the records in a kv / mqar prompt (every line after the header until a blank
// one).
std::map<std::string, std::string> parse_records(const RetrievalExample& e,
                                                 std::vector<std::string>* order = nullptr) {
  std::map<std::string, std::string> m;
  std::istringstream in(e.prompt);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line) && !line.empty()) {
    const size_t sp = line.find(' ');
    EXPECT_NE(sp, std::string::npos) << line;
    std::string k = line.substr(0, sp), v = line.substr(sp + 1);
    if (e.kind == RetrievalKind::kKv) {
      EXPECT_EQ(k.back(), ':') << line;
      k.pop_back();
    }
    EXPECT_TRUE(m.emplace(k, v).second) << "duplicate key " << k;
    if (order) order->push_back(k);
  }
  return m;
}

TEST(Retrieval, DeterministicFromSeed) {
  NEED_TOKENIZER();
  const RetrievalGenerator gen(*tok);
  RetrievalSetOptions o;
  o.kinds = {RetrievalKind::kMqar, RetrievalKind::kKv, RetrievalKind::kNeedle};
  o.contexts = {300};
  o.depths = {0, 0.5, 1};
  o.count = 2;
  o.seed = 7;
  const auto a = generate_retrieval_set(gen, o), b = generate_retrieval_set(gen, o);
  ASSERT_EQ(a.size(), 18u);
  std::set<std::string> prompts;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(retrieval_to_json(a[i]).dump(), retrieval_to_json(b[i]).dump());
    prompts.insert(a[i].prompt);
    // The stored seed regenerates the example alone.
    RetrievalSpec s{a[i].kind,   a[i].context_target,
                    a[i].depth,  int(a[i].queries.size()),
                    o.tolerance, a[i].seed};
    EXPECT_EQ(retrieval_to_json(gen.generate(s)).dump(), retrieval_to_json(a[i]).dump());
    // JSON round trip.
    const RetrievalExample r =
        retrieval_from_json(nlohmann::json::parse(retrieval_to_json(a[i]).dump()), "test");
    EXPECT_EQ(retrieval_to_json(r).dump(), retrieval_to_json(a[i]).dump());
  }
  EXPECT_EQ(prompts.size(), a.size()) << "examples repeat";
  o.seed = 8;
  const auto c = generate_retrieval_set(gen, o);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NE(c[i].prompt, a[i].prompt);
}

TEST(Retrieval, HitsTheContextLength) {
  NEED_TOKENIZER();
  const RetrievalGenerator gen(*tok);
  for (RetrievalKind k : {RetrievalKind::kMqar, RetrievalKind::kKv, RetrievalKind::kNeedle})
    for (int64_t ctx : {96, 257, 1000, 4096})
      for (int64_t tol : {16, 4}) {
        RetrievalSpec s{
            k, ctx, 0.3, k == RetrievalKind::kMqar ? 3 : 1, tol, uint64_t(ctx) * 31 + uint64_t(k)};
        if (k != RetrievalKind::kNeedle && tol < 8) continue;  // a record is up to ~8 tokens
        const RetrievalExample e = gen.generate(s);
        const std::vector<int32_t> ids = tok->encode(e.text(), false);
        EXPECT_EQ(int64_t(ids.size()), e.context_tokens);
        EXPECT_LE(e.context_tokens, ctx) << e.id;
        EXPECT_GE(e.context_tokens, ctx - tol) << e.id;
        // The pieces tokenise to the same ids as the whole text (what training sees = what is
        // scored).
        const RetrievalTokens t = tokenize_retrieval(e, *tok, 0);
        EXPECT_EQ(std::vector<int32_t>(t.ids.begin() + 1, t.ids.end()), ids) << e.id;
        ASSERT_EQ(t.answers.size(), e.queries.size());
        for (size_t q = 0; q < e.queries.size(); ++q)
          EXPECT_EQ(tok->decode(std::vector<int32_t>(t.ids.begin() + t.answers[q].first,
                                                     t.ids.begin() + t.answers[q].second)),
                    e.queries[q].answer);
      }
}

TEST(Retrieval, DepthPlacementAndUniqueAnswers) {
  NEED_TOKENIZER();
  const RetrievalGenerator gen(*tok);
  for (RetrievalKind k : {RetrievalKind::kKv, RetrievalKind::kMqar}) {
    double last = -1;
    for (double d : {0.0, 0.25, 0.5, 0.75, 1.0}) {
      const int q = k == RetrievalKind::kMqar ? 4 : 1;
      const RetrievalExample e = gen.generate({k, 2048, d, q, 16, 99});
      std::vector<std::string> order;
      const auto recs = parse_records(e, &order);
      ASSERT_EQ(int64_t(recs.size()), e.records);
      std::set<std::string> values;
      for (const auto& [key, v] : recs) values.insert(v);
      EXPECT_EQ(values.size(), recs.size()) << "duplicate values";
      if (k == RetrievalKind::kMqar) {
        for (const auto& [key, v] : recs) EXPECT_EQ(recs.count(v), 0u) << "a value is also a key";
      }
      std::set<int64_t> queried;
      for (const RetrievalQuery& qu : e.queries) {
        queried.insert(qu.record);
        ASSERT_GE(qu.record, 0);
        const std::string& key = order[size_t(qu.record)];
        EXPECT_NE(qu.question.find(key), std::string::npos);
        EXPECT_EQ(" " + recs.at(key), qu.answer);
      }
      EXPECT_EQ(queried.size(), size_t(q));
      const int64_t n = e.records, lo = *queried.begin(), hi = *queried.rbegin();
      EXPECT_EQ(hi - lo, q - 1);  // one block
      // The block is centred at depth * (n - 1), clamped to fit the list.
      const double centre =
          std::clamp(d * double(n - 1), (q - 1) / 2.0, double(n - 1) - (q - 1) / 2.0);
      EXPECT_LE(std::abs(double(lo + hi) / 2 - centre), 0.5) << e.id;
      EXPECT_NEAR(e.depth_actual, d, 0.06) << e.id;
      EXPECT_GT(e.depth_actual, last);
      last = e.depth_actual;
    }
  }
  double last = -1;
  for (double d : {0.0, 0.1, 0.5, 0.9, 1.0}) {
    const RetrievalExample e = gen.generate({RetrievalKind::kNeedle, 3000, d, 1, 16, 5});
    const std::string& qs = e.queries[0].question;
    const size_t k0 = qs.find(" of ") + 4;
    const std::string key = qs.substr(k0, qs.find('?') - k0);
    ASSERT_EQ(key.size(), 6u) << qs;
    EXPECT_EQ(e.prompt.find(key), e.prompt.rfind(key)) << "the key occurs more than once";
    const size_t at = e.prompt.find(" The secret number of ");
    ASSERT_NE(at, std::string::npos);
    EXPECT_EQ(e.prompt.find("secret number of", at + 10), std::string::npos) << "two needles";
    EXPECT_EQ(e.prompt.find(e.queries[0].answer.substr(1)), e.prompt.find(" is ", at) + 4);
    // Token depth: the needle's token offset over the context; generated sentences are ~12
    // tokens, so the nearest sentence boundary is within ~0.01 of the requested depth.
    EXPECT_NEAR(e.depth_actual, d, 0.05) << e.id;
    EXPECT_GT(e.depth_actual, last);
    last = e.depth_actual;
    const int64_t before = tok->encode(e.prompt.substr(0, at), false).size();
    EXPECT_EQ(before, e.queries[0].token_offset);
  }
}

TEST(Retrieval, FillerFromText) {
  NEED_TOKENIZER();
  std::string corpus;
  for (int i = 0; i < 50; ++i)
    corpus += "Lorem   ipsum dolor sit amet,\n\n consectetur adipiscing elit. ";
  const RetrievalGenerator gen(*tok, corpus);
  const RetrievalExample e = gen.generate({RetrievalKind::kNeedle, 1500, 0.5, 1, 4, 3});
  EXPECT_NE(e.prompt.find("dolor sit amet, consectetur"),
            std::string::npos);  // whitespace collapsed
  EXPECT_EQ(e.prompt.find("  "), std::string::npos);
  EXPECT_LE(e.context_tokens, 1500);
  EXPECT_GE(e.context_tokens, 1496);
  EXPECT_THROW(RetrievalGenerator(*tok, " \n\t "), Error);
}

TEST(Retrieval, BadInputIsAnError) {
  NEED_TOKENIZER();
  const RetrievalGenerator gen(*tok);
  auto bad = [&](RetrievalSpec s, const char* what) {
    try {
      gen.generate(s);
      ADD_FAILURE() << "accepted: " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  bad({RetrievalKind::kKv, 1024, -0.1, 1, 16, 1}, "depth");
  bad({RetrievalKind::kKv, 1024, 1.5, 1, 16, 1}, "depth");
  bad({RetrievalKind::kKv, 1024, std::nan(""), 1, 16, 1}, "depth");
  bad({RetrievalKind::kNeedle, 10, 0.5, 1, 4, 1}, "context");
  bad({RetrievalKind::kMqar, 1024, 0.5, 0, 16, 1}, "queries");
  bad({RetrievalKind::kKv, 1024, 0.5, 2, 16, 1}, "asks one query");
  bad({RetrievalKind::kMqar, 64, 0.5, 50, 16, 1}, "too short");
  bad({RetrievalKind::kKv, 1024, 0.5, 1, 1024, 1}, "tolerance");
  EXPECT_THROW(parse_retrieval_kind("haystack"), Error);
  RetrievalSetOptions o;
  o.kinds = {RetrievalKind::kKv};
  o.contexts = {256};
  EXPECT_THROW(generate_retrieval_set(gen, o), Error);  // no depths
  EXPECT_THROW(read_retrieval_jsonl("/nonexistent/x.jsonl"), Error);
  auto j = nlohmann::json::parse(
      retrieval_to_json(gen.generate({RetrievalKind::kKv, 256, 0.5, 1, 16, 1})).dump());
  j.erase("prompt");
  EXPECT_THROW(retrieval_from_json(j, "t"), Error);
}

TEST(Retrieval, ExactAnswerScorer) {
  EXPECT_EQ(normalise_answer("  Foo\n\t BAR 12 "), "foo bar 12");
  EXPECT_EQ(normalise_answer(""), "");
  RetrievalExample e;
  e.queries = {{"\nq1", " 123456"}, {"\nq2", " Bakotu"}};
  EXPECT_TRUE(answers_match(e, {"123456", " bakotu\n"}));
  EXPECT_FALSE(answers_match(e, {"123456", "bakotu x"}));
  EXPECT_FALSE(answers_match(e, {"12345", "bakotu"}));
  EXPECT_FALSE(answers_match(e, {"123456"}));  // every query must be answered
}

// The model side on the tiny preset (vocabulary 1000, no tokenizer): a random sequence with two
// answer spans. The chunked teacher-forced check must equal the argmax of one all-logits forward;
// answers replaced by the model's own greedy tokens score 1, one changed token breaks it.
TEST(RetrievalEval, TeacherForcedGreedyOnTinyModel) {
  auto model =
      Model::load(test::tiny_model_dir(), ops::select_backend("cpu"), [](const std::string&) {});
  const int64_t V = model->config().vocab_size;
  test::Rng rng(3);
  RetrievalTokens t;
  for (int i = 0; i < 90; ++i) t.ids.push_back(rng.uni(2, int(V) - 1));
  t.answers = {{40, 43}, {70, 72}};
  ForwardOptions fo;
  fo.absorbed_prefill = true;
  const RetrievalCheck r0 = check_retrieval(*model, t, fo);
  ASSERT_EQ(r0.predicted.size(), 2u);
  EXPECT_GE(r0.queries_correct, 0);
  EXPECT_LE(r0.queries_correct, 2);
  {
    SequenceState s = model->new_sequence();
    ForwardOptions all = fo;
    all.all_logits = true;
    const std::vector<int32_t> upto(t.ids.begin(), t.ids.begin() + 71);
    const std::vector<float> logits = model->forward(s, upto, all);
    for (size_t q = 0; q < 2; ++q)
      for (int64_t p = t.answers[q].first; p < t.answers[q].second; ++p) {
        const float* row = logits.data() + (p - 1) * V;
        EXPECT_EQ(r0.predicted[q][size_t(p - t.answers[q].first)],
                  int32_t(std::max_element(row, row + V) - row))
            << "position " << p;
      }
  }
  // Greedy: fix one answer position at a time (a position's prediction depends on earlier ids
  // only).
  RetrievalTokens g = t;
  for (size_t q = 0; q < 2; ++q)
    for (int64_t p = g.answers[q].first; p < g.answers[q].second; ++p)
      g.ids[size_t(p)] =
          check_retrieval(*model, g, fo).predicted[q][size_t(p - g.answers[q].first)];
  const RetrievalCheck r1 = check_retrieval(*model, g, fo);
  EXPECT_TRUE(r1.correct);
  EXPECT_EQ(r1.queries_correct, 2);
  RetrievalTokens w = g;
  w.ids[71] = int32_t((w.ids[71] + 1) % V);
  const RetrievalCheck r2 = check_retrieval(*model, w, fo);
  EXPECT_FALSE(r2.correct);
  EXPECT_EQ(r2.queries_correct, 1);
  // Aggregation: accuracy in [0, 1] per cell.
  std::vector<RetrievalExample> ex(3);
  for (auto& e : ex) e.kind = RetrievalKind::kKv, e.context_target = 90, e.depth = 0.5;
  const auto cells = aggregate_retrieval(ex, {r0, r1, r2});
  ASSERT_EQ(cells.size(), 1u);
  EXPECT_EQ(cells[0].examples, 3);
  EXPECT_EQ(cells[0].correct, int(r0.correct) + 1);
  EXPECT_NE(format_retrieval_table(cells).find("kv"), std::string::npos);
  // Ids outside the vocabulary are refused.
  RetrievalTokens bad = t;
  bad.ids[5] = int32_t(V);
  EXPECT_THROW(check_retrieval(*model, bad, fo), Error);
}

}  // namespace
}  // namespace dsa::train
