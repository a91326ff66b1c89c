// Teacher-forced greedy scoring of retrieval examples and the accuracy table
// (train/retrieval_eval.h).
#include "train/retrieval_eval.h"

#include <map>
#include <set>
#include <tuple>

#include "base/error.h"
#include "text/tokenizer.h"

namespace dsa::train {

RetrievalTokens tokenize_retrieval(const RetrievalExample& e, const text::Tokenizer& tok,
                                   int32_t bos) {
  RetrievalTokens t;
  t.ids.push_back(bos);
  auto add = [&](const std::string& s) {
    const std::vector<int32_t> v = tok.encode(s, /*allow_special=*/false);
    t.ids.insert(t.ids.end(), v.begin(), v.end());
  };
  add(e.prompt);
  for (const RetrievalQuery& q : e.queries) {
    add(q.question);
    const int64_t b = int64_t(t.ids.size());
    add(q.answer);
    DSA_CHECK(int64_t(t.ids.size()) > b, "{}: an answer without tokens", e.id);
    t.answers.push_back({b, int64_t(t.ids.size())});
  }
  DSA_CHECK(int64_t(t.ids.size()) - 1 == e.context_tokens,
            "{}: its pieces tokenise to {} tokens, the whole text to {} (context_tokens)", e.id,
            t.ids.size() - 1, e.context_tokens);
  return t;
}

namespace {

int32_t argmax(const float* row, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (row[i] > row[best]) best = i;
  return int32_t(best);
}

}  // namespace

RetrievalCheck check_retrieval(Model& model, const RetrievalTokens& t, const ForwardOptions& opt) {
  const ModelConfig& c = model.config();
  DSA_CHECK(!t.answers.empty() && t.answers.front().first >= 1, "retrieval: nothing to score");
  DSA_CHECK(int64_t(t.ids.size()) <= c.max_position_embeddings,
            "retrieval: {} tokens exceed the model's max_position_embeddings {}", t.ids.size(),
            c.max_position_embeddings);
  for (int32_t id : t.ids)
    DSA_CHECK(id >= 0 && id < c.vocab_size,
              "retrieval: token id {} is outside the model's vocabulary ({}); wrong tokenizer?", id,
              c.vocab_size);
  SequenceState seq = model.new_sequence();
  RetrievalCheck r;
  int64_t fed = 0;  // ids[0 .. fed) are in the cache
  auto feed = [&](int64_t end, bool all) {
    ForwardOptions o = opt;
    o.all_logits = all;
    const std::vector<int32_t> chunk(t.ids.begin() + fed, t.ids.begin() + end);
    fed = end;
    return model.forward(seq, chunk, o);
  };
  for (const auto& [b, e] : t.answers) {
    DSA_CHECK(b > fed && e > b && e <= int64_t(t.ids.size()),
              "retrieval: answer spans out of order");
    std::vector<int32_t> pred;
    // Position b-1 predicts ids[b]; positions b .. e-2 predict ids[b+1 .. e-1].
    const std::vector<float> last = feed(b, false);
    pred.push_back(argmax(last.data(), c.vocab_size));
    if (e - 1 > b) {
      const std::vector<float> rows = feed(e - 1, true);
      for (int64_t i = 0; i < e - 1 - b; ++i)
        pred.push_back(argmax(rows.data() + i * c.vocab_size, c.vocab_size));
    }
    bool ok = true;
    for (int64_t i = b; i < e; ++i) ok = ok && pred[size_t(i - b)] == t.ids[size_t(i)];
    r.queries_correct += ok;
    r.predicted.push_back(std::move(pred));
  }
  r.correct = r.queries_correct == int(t.answers.size());
  return r;
}

std::vector<RetrievalCell> aggregate_retrieval(const std::vector<RetrievalExample>& ex,
                                               const std::vector<RetrievalCheck>& res) {
  DSA_CHECK(ex.size() == res.size(), "retrieval: {} examples but {} results", ex.size(),
            res.size());
  std::map<std::tuple<std::string, int64_t, double>, RetrievalCell> m;
  for (size_t i = 0; i < ex.size(); ++i) {
    const std::string kind = retrieval_kind_name(ex[i].kind);
    RetrievalCell& c = m[{kind, ex[i].context_target, ex[i].depth}];
    c.kind = kind;
    c.context = ex[i].context_target;
    c.depth = ex[i].depth;
    ++c.examples;
    c.correct += res[i].correct;
    c.queries += int(res[i].predicted.size());
    c.queries_correct += res[i].queries_correct;
  }
  std::vector<RetrievalCell> out;
  for (auto& [k, c] : m) out.push_back(c);
  return out;
}

std::string format_retrieval_table(const std::vector<RetrievalCell>& cells) {
  std::set<double> depths;
  std::map<std::pair<std::string, int64_t>, std::map<double, const RetrievalCell*>> rows;
  for (const RetrievalCell& c : cells) {
    depths.insert(c.depth);
    rows[{c.kind, c.context}][c.depth] = &c;
  }
  std::string out = fmt::format("{:<8} {:>8}", "kind", "context");
  for (double d : depths) out += fmt::format(" {:>8}", fmt::format("d={:.2f}", d));
  out += fmt::format(" {:>8} {:>9}\n", "all", "examples");
  for (const auto& [key, by_depth] : rows) {
    out += fmt::format("{:<8} {:>8}", key.first, key.second);
    int n = 0, ok = 0;
    for (double d : depths) {
      auto it = by_depth.find(d);
      if (it == by_depth.end()) {
        out += fmt::format(" {:>8}", "-");
        continue;
      }
      n += it->second->examples;
      ok += it->second->correct;
      out += fmt::format(" {:>7.1f}%", 100.0 * it->second->correct / it->second->examples);
    }
    out += fmt::format(" {:>7.1f}% {:>9}\n", 100.0 * ok / n, n);
  }
  return out;
}

}  // namespace dsa::train
