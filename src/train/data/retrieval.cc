// The retrieval task generator (train/data/retrieval.h): records or filler fitted to a token
// budget with the tokenizer, queried items placed at a depth; JSONL and corpus-text output.
#include "train/data/retrieval.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <unordered_set>

#include "base/error.h"
#include "base/hash.h"
#include "text/tokenizer.h"

namespace fs = std::filesystem;

namespace dsa::train {

namespace {

// splitmix64 stream: the same numbers on every platform (std distributions are not).
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    const uint64_t r = splitmix64(s);
    s += 0x9E3779B97F4A7C15ULL;
    return r;
  }
  uint64_t below(uint64_t n) { return uint64_t((unsigned __int128)next() * n >> 64); }
};

constexpr char kConsonants[] = "bdfgklmnprstvz";
constexpr char kVowels[] = "aeiou";

// Three consonant-vowel syllables: 343,000 lower-case pseudo-words.
std::string pseudo_word(Rng& r) {
  std::string w;
  for (int i = 0; i < 3; ++i) {
    w += kConsonants[r.below(sizeof(kConsonants) - 1)];
    w += kVowels[r.below(sizeof(kVowels) - 1)];
  }
  return w;
}

std::string unique_word(Rng& r, std::unordered_set<std::string>& used) {
  for (int t = 0; t < 1000; ++t) {
    std::string w = pseudo_word(r);
    if (used.insert(w).second) return w;
  }
  DSA_FAIL("retrieval: ran out of unique keys ({} in use)", used.size());
}

std::string unique_number(Rng& r, std::unordered_set<std::string>& used) {
  for (int t = 0; t < 1000; ++t) {
    std::string v = std::to_string(100000 + r.below(900000));
    if (used.insert(v).second) return v;
  }
  DSA_FAIL("retrieval: ran out of unique values ({} in use)", used.size());
}

// Generated filler: plain sentences without digits (so no number but the needle's).
constexpr const char* kAdjectives[] = {"quiet",  "old",     "narrow",  "bright", "heavy", "green",
                                       "cold",   "gentle",  "distant", "small",  "wide",  "dusty",
                                       "silver", "patient", "early",   "warm"};
constexpr const char* kNouns[] = {"river",    "village", "farmer", "garden", "bridge", "teacher",
                                  "window",   "market",  "forest", "engine", "letter", "harbour",
                                  "mountain", "painter", "road",   "lamp"};
constexpr const char* kVerbs[] = {"watched",   "crossed",  "followed", "painted",
                                  "carried",   "visited",  "passed",   "remembered",
                                  "described", "repaired", "found",    "left"};
constexpr const char* kPlaces[] = {"near the station",    "after the rain",   "before dawn",
                                   "in the valley",       "along the coast",  "under the trees",
                                   "at the edge of town", "during the winter"};

template <size_t N>
const char* pick(Rng& r, const char* const (&a)[N]) {
  return a[r.below(N)];
}

std::string sentence(Rng& r) {
  switch (r.below(3)) {
    case 0:
      return fmt::format("The {} {} {} the {} {}.", pick(r, kAdjectives), pick(r, kNouns),
                         pick(r, kVerbs), pick(r, kNouns), pick(r, kPlaces));
    case 1:
      return fmt::format("A {} {} was seen {}, and nobody asked why.", pick(r, kAdjectives),
                         pick(r, kNouns), pick(r, kPlaces));
    default:
      return fmt::format("Everyone agreed that the {} {} was {} {}.", pick(r, kNouns),
                         pick(r, kVerbs), pick(r, kAdjectives), pick(r, kPlaces));
  }
}

// " w1", " w2", ...: words with one leading space each (whitespace runs collapse).
void split_words(std::string_view s, std::vector<std::string>& out) {
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::isspace(uint8_t(s[i]))) ++i;
    size_t j = i;
    while (j < s.size() && !std::isspace(uint8_t(s[j]))) ++j;
    if (j > i) {
      std::string w(1, ' ');
      w.append(s.substr(i, j - i));
      out.push_back(std::move(w));
    }
    i = j;
  }
}

void check_spec(const RetrievalSpec& s) {
  DSA_CHECK(s.context >= 32 && s.context <= (int64_t(1) << 22),
            "retrieval: context {} must be in 32..4194304 tokens", s.context);
  DSA_CHECK(std::isfinite(s.depth) && s.depth >= 0 && s.depth <= 1,
            "retrieval: depth {} must be in [0, 1]", s.depth);
  DSA_CHECK(s.queries >= 1, "retrieval: queries = {} must be >= 1", s.queries);
  DSA_CHECK(s.kind == RetrievalKind::kMqar || s.queries == 1,
            "retrieval: {} asks one query, not {}", retrieval_kind_name(s.kind), s.queries);
  DSA_CHECK(s.tolerance >= 0 && s.tolerance < s.context,
            "retrieval: tolerance {} must be in 0..context-1", s.tolerance);
}

}  // namespace

RetrievalKind parse_retrieval_kind(std::string_view name) {
  if (name == "mqar") return RetrievalKind::kMqar;
  if (name == "kv") return RetrievalKind::kKv;
  if (name == "needle") return RetrievalKind::kNeedle;
  DSA_FAIL("unknown retrieval kind \"{}\" (known: mqar, kv, needle)", name);
}

const char* retrieval_kind_name(RetrievalKind k) {
  return k == RetrievalKind::kMqar ? "mqar" : k == RetrievalKind::kKv ? "kv" : "needle";
}

std::string RetrievalExample::text() const {
  std::string t = prompt;
  for (const RetrievalQuery& q : queries) t += q.question + q.answer;
  return t;
}

RetrievalGenerator::RetrievalGenerator(const text::Tokenizer& tok, std::string filler) : tok_(tok) {
  if (!filler.empty()) {
    split_words(filler, filler_words_);
    DSA_CHECK(!filler_words_.empty(), "retrieval: the filler text holds only whitespace");
  }
}

int64_t RetrievalGenerator::count_tokens(std::string_view s) const {
  return int64_t(tok_.encode(s, /*allow_special=*/false).size());
}

// Tokens of the whole text, which must equal the pieces' (prompt, each question and answer)
// tokenised one by one: the evaluation scores the answers' own tokens.
int64_t RetrievalGenerator::measure(const RetrievalExample& e) const {
  const int64_t whole = count_tokens(e.text());
  int64_t pieces = count_tokens(e.prompt);
  for (const RetrievalQuery& q : e.queries)
    pieces += count_tokens(q.question) + count_tokens(q.answer);
  DSA_CHECK(whole == pieces,
            "retrieval: {} tokenises to {} tokens whole but {} in pieces (seed {})",
            retrieval_kind_name(e.kind), whole, pieces, e.seed);
  return whole;
}

RetrievalExample RetrievalGenerator::generate(const RetrievalSpec& spec) const {
  check_spec(spec);
  RetrievalExample e =
      spec.kind == RetrievalKind::kNeedle ? generate_needle(spec) : generate_records(spec);
  e.kind = spec.kind;
  e.context_target = spec.context;
  e.depth = spec.depth;
  e.seed = spec.seed;
  e.id = fmt::format("{}-{}-d{:.3f}-{:016x}", retrieval_kind_name(spec.kind), spec.context,
                     spec.depth, spec.seed);
  double sum = 0;
  for (const RetrievalQuery& q : e.queries) sum += double(q.token_offset);
  e.depth_actual = sum / double(e.queries.size()) / double(e.context_tokens);
  return e;
}

// kv: "key: 123456" lines, one queried; mqar: "key value" lines, `queries` of them queried in a
// shuffled order. The queried records are a block centred at depth * (records - 1).
RetrievalExample RetrievalGenerator::generate_records(const RetrievalSpec& s) const {
  const bool kv = s.kind == RetrievalKind::kKv;
  const int64_t q = s.queries;
  Rng rng(s.seed);
  // Piece boundaries never follow punctuation with a newline (the pre-tokenizer would merge
  // them): records end with "\n", questions start with a letter after the prompt's final "\n".
  const std::string header =
      kv ? "Below is a list of records, one per line: a key, a colon and the key's value.\n"
         : "Remember the pairs below: each line is a key word followed by its value word.\n";
  const std::string footer = kv ? "\n" : "\nNow recall the value of each key, one per line.\n";
  std::vector<std::string> keys, values;
  std::vector<int64_t> prefix = {0}, qa_cost;  // prefix[i] = tokens of records 0..i-1
  std::unordered_set<std::string> used;
  auto record = [&](int64_t i) {
    return keys[size_t(i)] + (kv ? ": " : " ") + values[size_t(i)] + "\n";
  };
  // mqar: the first question follows the prompt's final newline, the others an answer.
  auto question = [&](int64_t i, bool first) {
    return kv ? "What is the value of " + keys[size_t(i)] + "? Answer:"
              : (first ? "" : "\n") + keys[size_t(i)];
  };
  auto answer = [&](int64_t i) { return " " + values[size_t(i)]; };
  auto draw = [&]() {
    keys.push_back(unique_word(rng, used));
    values.push_back(kv ? unique_number(rng, used) : unique_word(rng, used));
    const int64_t i = int64_t(keys.size()) - 1;
    prefix.push_back(prefix.back() + count_tokens(record(i)));
    qa_cost.push_back(count_tokens(question(i, false)) + count_tokens(answer(i)));
  };
  auto first_queried = [&](int64_t n) {
    const double c = s.depth * double(n - 1) - double(q - 1) / 2.0;
    return std::clamp<int64_t>(std::llround(c), 0, n - q);
  };
  const int64_t fixed = count_tokens(header) + count_tokens(footer);
  auto estimate = [&](int64_t n) {
    int64_t t = fixed + prefix[size_t(n)];
    for (int64_t i = first_queried(n), k = 0; k < q; ++k) t += qa_cost[size_t(i + k)];
    return t;
  };
  while (int64_t(keys.size()) < q) draw();
  DSA_CHECK(estimate(q) <= s.context,
            "retrieval: context {} is too short for {} {} quer{} (needs about {} tokens)",
            s.context, q, retrieval_kind_name(s.kind), q == 1 ? "y" : "ies", estimate(q));
  int64_t n = q;
  for (;;) {
    if (int64_t(keys.size()) < n + 1) draw();
    if (estimate(n + 1) > s.context) break;
    ++n;
  }
  std::vector<int64_t> order(static_cast<size_t>(q));
  for (int64_t k = 0; k < q; ++k) order[size_t(k)] = k;
  for (int64_t k = q - 1; k > 0; --k)
    std::swap(order[size_t(k)], order[rng.below(uint64_t(k) + 1)]);
  const int64_t header_cost = count_tokens(header);
  // The estimate adds the pieces' token counts; the tokenizer may merge across a boundary, so the
  // whole text is measured and records dropped until it fits (pieces start with whitespace, so
  // this does not happen with the DeepSeek pre-tokenizer).
  for (;; --n) {
    DSA_CHECK(n >= q, "retrieval: cannot fit {} queries into {} tokens", q, s.context);
    RetrievalExample e;
    e.kind = s.kind;
    e.seed = s.seed;
    e.records = n;
    e.prompt = header;
    for (int64_t i = 0; i < n; ++i) e.prompt += record(i);
    e.prompt += footer;
    const int64_t first = first_queried(n);
    for (int64_t k = 0; k < q; ++k) {
      const int64_t i = first + order[size_t(k)];
      e.queries.push_back({question(i, k == 0), answer(i), i, header_cost + prefix[size_t(i)]});
    }
    e.context_tokens = measure(e);
    if (e.context_tokens > s.context) continue;
    DSA_CHECK(e.context_tokens >= s.context - s.tolerance,
              "retrieval: {} tokens, short of {} by more than the tolerance {}", e.context_tokens,
              s.context, s.tolerance);
    return e;
  }
}

// One fact, " The secret number of KEY is NNNNNN.", at a sentence boundary of the filler near
// depth * filler tokens; the question asks for it at the end.
RetrievalExample RetrievalGenerator::generate_needle(const RetrievalSpec& s) const {
  Rng rng(s.seed);
  const std::string header = "Read the text below and remember the secret number it mentions.";
  std::vector<std::string> units;
  if (filler_words_.empty()) {
    while (units.size() < 64) split_words(sentence(rng), units);
  }
  size_t corpus_pos = filler_words_.empty() ? 0 : size_t(rng.below(filler_words_.size()));
  auto unit = [&](size_t i) -> const std::string& {
    while (units.size() <= i) {
      if (filler_words_.empty()) {
        split_words(sentence(rng), units);
      } else {
        units.push_back(filler_words_[corpus_pos]);
        corpus_pos = (corpus_pos + 1) % filler_words_.size();
      }
    }
    return units[i];
  };
  std::unordered_set<std::string> used;
  // A key that the filler happens to contain is drawn again (the question must name one fact).
  for (int attempt = 0; attempt < 100; ++attempt) {
    const std::string key = unique_word(rng, used), value = unique_number(rng, used);
    const std::string needle = " The secret number of " + key + " is " + value + ".";
    const std::string question = "What is the secret number of " + key + "? Answer:";
    const std::string answer = " " + value;
    const int64_t header_cost = count_tokens(header);
    const int64_t fixed = header_cost + count_tokens(needle) + count_tokens("\n\n") +
                          count_tokens(question) + count_tokens(answer);
    DSA_CHECK(fixed <= s.context,
              "retrieval: context {} is too short for a needle (needs {} tokens)", s.context,
              fixed);
    std::vector<int64_t> prefix = {0};
    for (size_t i = 0;; ++i) {
      const int64_t c = count_tokens(unit(i));
      if (fixed + prefix.back() + c > s.context) break;
      prefix.push_back(prefix.back() + c);
    }
    for (int64_t n = int64_t(prefix.size()) - 1;; --n) {
      // Insertion point: the unit boundary closest to depth * filler tokens, preferring the ends of
      // sentences (within 64 tokens), so that the fact is not spliced into the middle of one.
      const double want = s.depth * double(prefix[size_t(n)]);
      int64_t best = -1, best_any = 0;
      for (int64_t j = 0; j <= n; ++j) {
        const double d = std::abs(double(prefix[size_t(j)]) - want);
        if (d < std::abs(double(prefix[size_t(best_any)]) - want)) best_any = j;
        const bool boundary =
            j == 0 || j == n ||
            std::string_view(".!?").find(units[size_t(j - 1)].back()) != std::string_view::npos;
        if (boundary && d <= 64 && (best < 0 || d < std::abs(double(prefix[size_t(best)]) - want)))
          best = j;
      }
      const int64_t at = best >= 0 ? best : best_any;
      std::string before, after;
      for (int64_t j = 0; j < n; ++j) (j < at ? before : after) += units[size_t(j)];
      if (before.find(key) != std::string::npos || after.find(key) != std::string::npos) break;
      RetrievalExample e;
      e.kind = s.kind;
      e.seed = s.seed;
      e.records = prefix[size_t(n)];
      e.prompt = header + before + needle + after + "\n\n";
      e.queries.push_back({question, answer, -1, header_cost + prefix[size_t(at)]});
      e.context_tokens = measure(e);
      if (e.context_tokens > s.context) continue;
      DSA_CHECK(e.context_tokens >= s.context - s.tolerance,
                "retrieval: {} tokens, short of {} by more than the tolerance {}", e.context_tokens,
                s.context, s.tolerance);
      return e;
    }
  }
  DSA_FAIL("retrieval: every key drawn for seed {} occurs in the filler text", s.seed);
}

std::vector<RetrievalExample> generate_retrieval_set(const RetrievalGenerator& gen,
                                                     const RetrievalSetOptions& o) {
  DSA_CHECK(!o.kinds.empty() && !o.contexts.empty() && !o.depths.empty(),
            "retrieval: no kinds, contexts or depths");
  DSA_CHECK(o.count >= 1, "retrieval: count = {} must be >= 1", o.count);
  std::vector<RetrievalExample> out;
  for (RetrievalKind k : o.kinds)
    for (int64_t c : o.contexts)
      for (double d : o.depths)
        for (int i = 0; i < o.count; ++i) {
          RetrievalSpec s;
          s.kind = k;
          s.context = c;
          s.depth = d;
          s.queries = k == RetrievalKind::kMqar ? o.queries : 1;
          s.tolerance = o.tolerance;
          const std::string coord = fmt::format("{}/{}/{:.6f}/{}", retrieval_kind_name(k), c, d, i);
          s.seed = splitmix64(splitmix64(o.seed) ^ fnv1a_bytes(kFnv1aOffset, coord));
          out.push_back(gen.generate(s));
        }
  return out;
}

nlohmann::ordered_json retrieval_to_json(const RetrievalExample& e) {
  nlohmann::ordered_json j;
  j["id"] = e.id;
  j["kind"] = retrieval_kind_name(e.kind);
  j["context_target"] = e.context_target;
  j["context_tokens"] = e.context_tokens;
  j["depth"] = e.depth;
  j["depth_actual"] = e.depth_actual;
  j["seed"] = e.seed;
  j["records"] = e.records;
  j["prompt"] = e.prompt;
  j["queries"] = nlohmann::ordered_json::array();
  j["answers"] = nlohmann::ordered_json::array();
  for (const RetrievalQuery& q : e.queries) {
    j["queries"].push_back({{"question", q.question},
                            {"answer", q.answer},
                            {"record", q.record},
                            {"token_offset", q.token_offset}});
    j["answers"].push_back(q.answer);
  }
  return j;
}

RetrievalExample retrieval_from_json(const nlohmann::json& j, const std::string& where) {
  try {
    DSA_CHECK(j.is_object(), "not a JSON object");
    RetrievalExample e;
    e.id = j.at("id").get<std::string>();
    e.kind = parse_retrieval_kind(j.at("kind").get<std::string>());
    e.context_target = j.at("context_target").get<int64_t>();
    e.context_tokens = j.at("context_tokens").get<int64_t>();
    e.depth = j.at("depth").get<double>();
    e.depth_actual = j.at("depth_actual").get<double>();
    e.seed = j.at("seed").get<uint64_t>();
    e.records = j.at("records").get<int64_t>();
    e.prompt = j.at("prompt").get<std::string>();
    for (const auto& q : j.at("queries")) {
      e.queries.push_back({q.at("question").get<std::string>(), q.at("answer").get<std::string>(),
                           q.at("record").get<int64_t>(), q.at("token_offset").get<int64_t>()});
      DSA_CHECK(!normalise_answer(e.queries.back().answer).empty(), "query {} has an empty answer",
                e.queries.size());
    }
    DSA_CHECK(!e.queries.empty(), "no queries");
    DSA_CHECK(!e.prompt.empty(), "empty prompt");
    return e;
  } catch (const nlohmann::json::exception& ex) {
    DSA_FAIL("{}: bad retrieval example: {}", where, ex.what());
  } catch (const Error& ex) {
    DSA_FAIL("{}: bad retrieval example: {}", where, ex.what());
  }
}

std::vector<RetrievalExample> read_retrieval_jsonl(const std::string& path) {
  std::ifstream in(path);
  DSA_CHECK(in.good(), "{}: cannot open", path);
  std::vector<RetrievalExample> out;
  std::string line;
  for (uint64_t ln = 1; std::getline(in, line); ++ln) {
    if (line.empty()) continue;
    const std::string where = fmt::format("{}:{}", path, ln);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      DSA_FAIL("{}: not JSON: {}", where, e.what());
    }
    out.push_back(retrieval_from_json(j, where));
  }
  DSA_CHECK(!out.empty(), "{}: no examples", path);
  return out;
}

void write_retrieval_jsonl(const std::string& path, const std::vector<RetrievalExample>& v) {
  std::ofstream f(path);
  DSA_CHECK(f.good(), "{}: cannot write", path);
  for (const RetrievalExample& e : v) f << retrieval_to_json(e).dump() << "\n";
  f.close();
  DSA_CHECK(f.good(), "{}: write error", path);
}

void write_retrieval_text(const std::string& dir, const std::vector<RetrievalExample>& v) {
  const fs::path p = fs::path(dir) / "text";
  std::error_code ec;
  fs::create_directories(p, ec);
  DSA_CHECK(!ec, "{}: cannot create: {}", p.string(), ec.message());
  const std::string file = (p / "retrieval.jsonl").string();
  std::ofstream f(file);
  DSA_CHECK(f.good(), "{}: cannot write", file);
  for (const RetrievalExample& e : v)
    f << nlohmann::ordered_json{{"name", e.id}, {"text", e.text()}}.dump() << "\n";
  f.close();
  DSA_CHECK(f.good(), "{}: write error", file);
}

std::string normalise_answer(std::string_view s) {
  std::string out;
  bool space = false;
  for (char c : s) {
    if (std::isspace(uint8_t(c))) {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += char(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  }
  return out;
}

bool answers_match(const RetrievalExample& e, const std::vector<std::string>& predictions) {
  if (predictions.size() != e.queries.size()) return false;
  for (size_t i = 0; i < predictions.size(); ++i)
    if (normalise_answer(predictions[i]) != normalise_answer(e.queries[i].answer)) return false;
  return true;
}

}  // namespace dsa::train
