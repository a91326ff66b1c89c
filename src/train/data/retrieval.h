// Synthetic long-context retrieval tasks (multi-query associative recall, key-value lookup,
// needle in a haystack), generated deterministically from a seed to a token budget, with an
// exact-answer scorer (docs/training.md §10).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace dsa::text {
class Tokenizer;
}

namespace dsa::train {

enum class RetrievalKind { kMqar, kKv, kNeedle };
RetrievalKind parse_retrieval_kind(std::string_view name);  // "mqar" | "kv" | "needle"
const char* retrieval_kind_name(RetrievalKind k);

// One question of an example: the text appended after the prompt (or after the previous
// answer), then the exact answer text, which starts with a space.
struct RetrievalQuery {
  std::string question, answer;
  int64_t record = -1;       // index of the queried record (kv, mqar); -1 for needle
  int64_t token_offset = 0;  // token offset of the queried record / needle in the example
};

// The example's text is prompt + question_1 + answer_1 + question_2 + answer_2 + ...
struct RetrievalExample {
  std::string id;
  RetrievalKind kind = RetrievalKind::kKv;
  int64_t context_target = 0;  // requested length in tokens
  int64_t context_tokens = 0;  // tokens of text() (measured with the tokenizer, without BOS)
  double depth = 0;            // requested depth in [0, 1]
  double depth_actual = 0;  // mean token_offset of the queried records / needle over context_tokens
  uint64_t seed = 0;        // regenerates this example alone (RetrievalSpec::seed)
  int64_t records = 0;      // key-value records (kv, mqar) or filler tokens (needle)
  std::string prompt;
  std::vector<RetrievalQuery> queries;
  std::string text() const;
};

struct RetrievalSpec {
  RetrievalKind kind = RetrievalKind::kKv;
  int64_t context = 4096;  // tokens; the example has context - tolerance .. context tokens
  double depth = 0.5;
  int queries = 1;  // kv and needle: 1; mqar: any number >= 1
  int64_t tolerance = 16;
  uint64_t seed = 1;
};

class RetrievalGenerator {
 public:
  // filler: text for needle examples (whitespace runs become one space); empty = generated
  // sentences.
  RetrievalGenerator(const text::Tokenizer& tok, std::string filler = "");
  // Throws dsa::Error on bad specs (depth outside [0,1], too short a context, ...).
  RetrievalExample generate(const RetrievalSpec& spec) const;
  int64_t count_tokens(std::string_view s) const;

 private:
  int64_t measure(const RetrievalExample& e) const;
  const text::Tokenizer& tok_;
  std::vector<std::string> filler_words_;  // " word" units of the filler text (empty: generated)
  RetrievalExample generate_records(const RetrievalSpec& s) const;
  RetrievalExample generate_needle(const RetrievalSpec& s) const;
};

// Every (kind, context, depth) combination, `count` examples each; example seeds derive from
// `seed` and the example's coordinates, so a set is a pure function of its arguments.
struct RetrievalSetOptions {
  std::vector<RetrievalKind> kinds;
  std::vector<int64_t> contexts;
  std::vector<double> depths;
  int count = 1, queries = 4;  // queries: mqar only (kv and needle ask one)
  int64_t tolerance = 16;
  uint64_t seed = 1;
};
std::vector<RetrievalExample> generate_retrieval_set(const RetrievalGenerator& gen,
                                                     const RetrievalSetOptions& o);

nlohmann::ordered_json retrieval_to_json(const RetrievalExample& e);
RetrievalExample retrieval_from_json(const nlohmann::json& j, const std::string& where);
std::vector<RetrievalExample> read_retrieval_jsonl(const std::string& path);
void write_retrieval_jsonl(const std::string& path, const std::vector<RetrievalExample>& v);
// DIR/text/retrieval.jsonl ({"text": ...} per example) for `dsa corpus build --text DIR`.
void write_retrieval_text(const std::string& dir, const std::vector<RetrievalExample>& v);

// The exact-answer scorer: lower-cased (ASCII), whitespace runs collapsed to one space, trimmed.
std::string normalise_answer(std::string_view s);
// True when there is one prediction per query and each equals its answer after normalisation.
bool answers_match(const RetrievalExample& e, const std::vector<std::string>& predictions);

}  // namespace dsa::train
