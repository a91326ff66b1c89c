// Training data: shard round trips and every kind of bad file, packing (BOS, boundaries, weights),
// the seeded sampler's determinism and exact resume, the validation split, and corpus building.
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "text_test_common.h"
#include "train/data/corpus.h"
#include "train/data/loader.h"
#include "train/data/shard.h"

namespace dsa::train {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  const fs::path d = fs::path(DSA_BINARY_DIR) / "test_data" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

using Doc = std::vector<int32_t>;

std::string write_shard(const fs::path& path, const std::vector<Doc>& docs, uint32_t vocab = 1000,
                        WeightKind wk = WeightKind::kNone, const std::vector<std::vector<float>>& weights = {}) {
  ShardWriter w(path.string(), {vocab, 0x1234, wk});
  const uint32_t a = w.add_source("alpha"), b = w.add_source("beta");
  for (size_t i = 0; i < docs.size(); ++i)
    w.add_document(docs[i], i % 3 == 2 ? b : a, weights.empty() ? std::span<const float>() : weights[i]);
  w.finish();
  return path.string();
}

std::string slurp(const std::string& p) { return text::testing::read_text_file(p); }
void spit(const std::string& p, const std::string& bytes) { std::ofstream(p, std::ios::binary) << bytes; }

// Rewrites both checksums so that a deliberately edited field reaches the semantic checks.
void fix_checksums(std::string& b) {
  const uint32_t body = uint32_t(crc32_z(0, reinterpret_cast<const Bytef*>(b.data()) + 128, b.size() - 128));
  std::memcpy(b.data() + 104, &body, 4);
  const uint32_t head = uint32_t(crc32_z(0, reinterpret_cast<const Bytef*>(b.data()), 108));
  std::memcpy(b.data() + 108, &head, 4);
}

void expect_open_error(const std::string& path, const std::string& what) {
  try {
    ShardReader::open(path);
    ADD_FAILURE() << "opened " << path << ", expected an error containing '" << what << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

std::vector<Doc> random_docs(int n, uint32_t seed, int max_len = 40, int vocab = 1000) {
  std::mt19937 g(seed);
  std::vector<Doc> docs(static_cast<size_t>(n));
  for (Doc& d : docs) {
    d.resize(size_t(1 + g() % uint32_t(max_len)));
    for (int32_t& t : d) t = int32_t(1 + g() % uint32_t(vocab - 1));  // never BOS, so BOS marks boundaries
  }
  return docs;
}

TEST(TrainShard, RoundTripWithAndWithoutWeights) {
  const fs::path d = temp_dir("roundtrip");
  const std::vector<Doc> docs = {{5, 6, 7}, {8}, {9, 10, 11, 12}, {999, 0, 1}};
  const std::vector<std::vector<float>> w = {{0, 1, 1}, {1}, {0, 0, 2}, {255, 3, 0}};
  for (WeightKind wk : {WeightKind::kNone, WeightKind::kU8, WeightKind::kF32}) {
    const std::string p = (d / fmt::format("s{}.dsatok", uint32_t(wk))).string();
    std::vector<std::vector<float>> ww = w;
    ww[2] = {0, 0, 2, 0.5f};
    if (wk == WeightKind::kU8) ww[2][3] = 7;
    write_shard(p, docs, 1000, wk, wk == WeightKind::kNone ? std::vector<std::vector<float>>{} : ww);
    EXPECT_FALSE(fs::exists(p + ".tmp"));
    const ShardReader r = ShardReader::open(p);
    EXPECT_EQ(r.header().vocab_size, 1000u);
    EXPECT_EQ(r.header().tokenizer_hash, 0x1234u);
    ASSERT_EQ(r.n_docs(), docs.size());
    EXPECT_EQ(r.sources(), (std::vector<std::string>{"alpha", "beta"}));
    uint64_t k = 0;
    for (size_t i = 0; i < docs.size(); ++i) {
      EXPECT_EQ(r.doc_begin(i), k);
      EXPECT_EQ(r.doc_source(i), i % 3 == 2 ? 1u : 0u);
      for (size_t j = 0; j < docs[i].size(); ++j, ++k) {
        EXPECT_EQ(r.tokens()[k], uint32_t(docs[i][j]));
        EXPECT_EQ(r.weight(k), wk == WeightKind::kNone ? 1.0f : ww[i][j]);
      }
      EXPECT_EQ(r.doc_end(i), k);
    }
  }
}

TEST(TrainShard, WriterRejectsBadDocumentsAndCleansUp) {
  const fs::path d = temp_dir("writer_errors");
  const std::string p = (d / "w.dsatok").string();
  {
    ShardWriter w(p, {100, 0, WeightKind::kU8});
    const uint32_t s = w.add_source("x");
    EXPECT_THROW(w.add_source("x"), Error);
    const std::vector<int32_t> empty, big = {1, 100}, neg = {-1}, ok = {1, 2};
    const std::vector<float> w2 = {1, 1}, w1 = {1}, frac = {0.5f, 1}, negw = {-1, 0};
    EXPECT_THROW(w.add_document(empty, s, {}), Error);
    EXPECT_THROW(w.add_document(big, s, w2), Error);
    EXPECT_THROW(w.add_document(neg, s, w1), Error);
    EXPECT_THROW(w.add_document(ok, s, w1), Error);     // weight count
    EXPECT_THROW(w.add_document(ok, s, frac), Error);   // u8 weights are integers
    EXPECT_THROW(w.add_document(ok, s, negw), Error);
    EXPECT_THROW(w.add_document(ok, s + 1, w2), Error);  // unregistered source
    w.add_document(ok, s, w2);
    EXPECT_TRUE(fs::exists(p + ".tmp"));
  }  // destroyed without finish(): nothing may remain
  EXPECT_FALSE(fs::exists(p));
  EXPECT_TRUE(fs::is_empty(d));
  ShardWriter none(p, {100, 0, WeightKind::kNone});
  none.add_source("x");
  const std::vector<int32_t> ok = {1};
  const std::vector<float> w1 = {1};
  EXPECT_THROW(none.add_document(ok, 0, w1), Error);  // weights for a shard without weights
  EXPECT_THROW(none.finish(), Error);                 // no documents
}

TEST(TrainShard, TruncatedCorruptAndMismatchedFilesAreClearErrors) {
  const fs::path d = temp_dir("corrupt");
  const std::string good = write_shard(d / "good.dsatok", random_docs(20, 1), 1000, WeightKind::kF32,
                                       [] {
                                         std::vector<std::vector<float>> w;
                                         for (const Doc& x : random_docs(20, 1)) w.emplace_back(x.size(), 0.5f);
                                         return w;
                                       }());
  const std::string bytes = slurp(good);
  const std::string p = (d / "bad.dsatok").string();
  auto try_bytes = [&](std::string b, const std::string& what) {
    spit(p, b);
    expect_open_error(p, what);
  };
  try_bytes("", "shorter than the 128-byte header");
  try_bytes(bytes.substr(0, 100), "shorter than the 128-byte header");
  for (size_t cut : {size_t(128), size_t(200), bytes.size() - 1}) try_bytes(bytes.substr(0, cut), "truncated");
  try_bytes(bytes + "x", "trailing bytes");
  std::string b = bytes;
  b[0] = 'X';
  try_bytes(b, "bad magic");
  b = bytes;
  b[130] ^= 1;
  try_bytes(b, "data checksum mismatch");
  b = bytes;
  b[33] ^= 1;  // n_tokens
  try_bytes(b, "header checksum mismatch");
  b = bytes;
  b[8] = 2;
  try_bytes(b, "format version 2 is not supported");
  // Semantically wrong files with valid checksums: one value written at a byte offset.
  auto header_u64 = [&](size_t at) {
    uint64_t v;
    std::memcpy(&v, bytes.data() + at, 8);
    return size_t(v);
  };
  auto try_patched = [&](size_t at, auto value, const std::string& what) {
    std::string pb = bytes;
    std::memcpy(pb.data() + at, &value, sizeof(value));
    fix_checksums(pb);
    try_bytes(pb, what);
  };
  try_patched(16, uint32_t(3), "token id");  // vocab_size below the ids
  // document 1 ends where document 0 started: empty/out of order
  try_patched(header_u64(64) + 8, uint64_t(0), "document 0 is empty or out of order");
  try_patched(header_u64(80) + 4 * 5, std::nanf(""), "weight of token 5");
  try_patched(40, uint64_t(21), "section offsets do not match");  // n_docs
  expect_open_error((d / "missing.dsatok").string(), "cannot open");

  // Mixing tokenizers in one loader is refused; so is a shard vocabulary above the model's.
  const std::string other = (d / "other.dsatok").string();
  {
    ShardWriter w(other, {1000, 0x9999, WeightKind::kNone});
    w.add_source("s");
    const std::vector<int32_t> doc(50, 7);
    w.add_document(doc, 0);
    w.finish();
  }
  EXPECT_THROW(DataLoader::open({good, other}, {.T = 8, .B = 2}), Error);
  EXPECT_THROW(DataLoader::open({good}, {.T = 8, .B = 2, .max_vocab = 512}), Error);
  EXPECT_NO_THROW(DataLoader::open({good}, {.T = 8, .B = 2, .max_vocab = 1000}));
}

// The validation split holding every document gives the unshuffled stream: check packing exactly.
TEST(TrainPacking, BosBoundariesAndStride) {
  const fs::path d = temp_dir("packing");
  const std::string p = write_shard(d / "p.dsatok", {{11, 12, 13}, {21, 22}, {31, 32, 33, 34, 35}});
  // Stream: BOS 11 12 13 BOS 21 22 BOS 31 32 33 34 35 (13 tokens); T = 4, stride T: 3 sequences.
  DataLoader L = DataLoader::open({p}, {.T = 4, .B = 3, .split = Split::kValidation, .val_permille = 1000});
  EXPECT_EQ(L.documents(), 3u);
  EXPECT_EQ(L.stream_tokens(), 13u);
  ASSERT_EQ(L.sequences_per_epoch(), 3u);
  const Batch b = L.next();
  EXPECT_EQ(b.B, 3);
  EXPECT_EQ(b.T, 4);
  const std::vector<int32_t> want = {0, 11, 12, 13, 0, /**/ 0, 21, 22, 0, 31, /**/ 31, 32, 33, 34, 35};
  EXPECT_EQ(b.tokens, want);
  EXPECT_EQ(b.weights, std::vector<float>(12, 1.0f));  // no weights: every target (BOS too) counts
  EXPECT_EQ(b.sequence_ids, (std::vector<uint64_t>{0, 1, 2}));
  EXPECT_EQ(L.next().tokens, want);  // validation wraps around in stream order
  // Too short for one sequence, or an empty split: clear errors.
  EXPECT_EQ(DataLoader::open({p}, {.T = 12, .B = 1, .split = Split::kValidation, .val_permille = 1000})
                .sequences_per_epoch(),
            1u);  // 13 tokens = T+1: exactly one
  EXPECT_THROW(DataLoader::open({p}, {.T = 13, .B = 1, .split = Split::kValidation, .val_permille = 1000}), Error);
  EXPECT_THROW(DataLoader::open({p}, {.T = 2, .B = 1, .split = Split::kTrain, .val_permille = 1000}), Error);
  EXPECT_THROW(DataLoader::open({p}, {.T = 0, .B = 1}), Error);
  EXPECT_THROW(DataLoader::open({p}, {.T = 4, .B = 0}), Error);
}

TEST(TrainPacking, WeightsAreTheTargetTokensWeights) {
  const fs::path d = temp_dir("weights");
  // SFT-style masks: 0 on the prompt, 1 on the answer.
  const std::string p = write_shard(d / "w.dsatok", {{11, 12, 13}, {21, 22}, {31, 32, 33}}, 1000, WeightKind::kU8,
                                    {{0, 1, 1}, {0, 1}, {1, 0, 1}});
  // Stream: BOS 11 12 13 BOS 21 22 BOS 31 32 33 with weights . 0 1 1 0 0 1 0 1 0 1 (BOS: 0).
  DataLoader L = DataLoader::open({p}, {.T = 5, .B = 2, .split = Split::kValidation, .val_permille = 1000});
  const Batch b = L.next();
  EXPECT_EQ(b.tokens, (std::vector<int32_t>{0, 11, 12, 13, 0, 21, /**/ 21, 22, 0, 31, 32, 33}));
  // weights[t] belongs to target tokens[t+1].
  EXPECT_EQ(b.weights, (std::vector<float>{0, 1, 1, 0, 0, /**/ 1, 0, 1, 0, 1}));
}

TEST(TrainLoader, DeterministicPermutationPerEpochAndSeed) {
  const fs::path d = temp_dir("determinism");
  const std::string p = write_shard(d / "d.dsatok", random_docs(300, 7));
  const LoaderOptions o{.T = 16, .B = 4, .seed = 42, .val_permille = 0};
  DataLoader a = DataLoader::open({p}, o), b = DataLoader::open({p}, o);
  LoaderOptions o2 = o;
  o2.seed = 43;
  DataLoader c = DataLoader::open({p}, o2);
  const uint64_t n = a.sequences_per_epoch();
  ASSERT_GT(n, 100u);
  std::vector<uint64_t> seen;
  bool differs = false;
  const uint64_t steps = (2 * n + 3) / 4;  // two epochs
  std::vector<uint64_t> epoch1;
  for (uint64_t s = 0; s < steps; ++s) {
    const Batch x = a.next(), y = b.next(), z = c.next();
    ASSERT_EQ(x.tokens, y.tokens);
    ASSERT_EQ(x.weights, y.weights);
    differs |= x.tokens != z.tokens;
    seen.insert(seen.end(), x.sequence_ids.begin(), x.sequence_ids.end());
    // Every sequence's first target comes after its first input; tokens stay in the vocabulary.
    for (int32_t t : x.tokens) ASSERT_TRUE(t >= 0 && t < 1000);
  }
  EXPECT_TRUE(differs);
  // Each epoch is a permutation of all sequences, and the two epochs' orders differ.
  std::vector<uint64_t> e0(seen.begin(), seen.begin() + n), e1(seen.begin() + n, seen.begin() + 2 * n);
  EXPECT_NE(e0, e1);
  std::sort(e0.begin(), e0.end());
  std::sort(e1.begin(), e1.end());
  for (uint64_t i = 0; i < n; ++i) ASSERT_EQ(e0[i], i);
  EXPECT_EQ(e0, e1);
  // batch_at(step * B) is the step's batch, without moving the position.
  DataLoader f = DataLoader::open({p}, o);
  const Batch at5 = f.batch_at(5 * 4, 4);
  f.seek(5);
  EXPECT_EQ(f.next().tokens, at5.tokens);
}

TEST(TrainLoader, ExactResumeAcrossEpochsThroughJson) {
  const fs::path d = temp_dir("resume");
  const std::string p1 = write_shard(d / "a.dsatok", random_docs(40, 3));
  const std::string p2 = write_shard(d / "b.dsatok", random_docs(40, 4));
  const LoaderOptions o{.T = 32, .B = 3, .seed = 9, .val_permille = 100};
  DataLoader full = DataLoader::open({p1, p2}, o);
  std::vector<Batch> want;
  const uint64_t steps = 2 * full.sequences_per_epoch() / 3 + 5;  // crosses an epoch boundary
  for (uint64_t s = 0; s < steps; ++s) want.push_back(full.next());
  for (uint64_t cut : {uint64_t(0), uint64_t(7), steps / 2, steps - 1}) {
    DataLoader first = DataLoader::open({p1, p2}, o);
    for (uint64_t s = 0; s < cut; ++s) ASSERT_EQ(first.next().tokens, want[s].tokens);
    const std::string saved = first.state().to_json();
    // A fresh process with another seed in its config: the saved position (and seed) wins.
    LoaderOptions other = o;
    other.seed = 1234;
    DataLoader resumed = DataLoader::open({p1, p2}, other);
    resumed.restore(LoaderState::from_json(saved));
    EXPECT_EQ(resumed.state(), first.state());
    for (uint64_t s = cut; s < steps; ++s) {
      const Batch b = resumed.next();
      ASSERT_EQ(b.tokens, want[s].tokens) << "cut " << cut << " step " << s;
      ASSERT_EQ(b.weights, want[s].weights);
    }
  }
  // Another T or shard set has another fingerprint; malformed positions are errors.
  DataLoader t16 = DataLoader::open({p1, p2}, {.T = 16, .B = 3, .seed = 9, .val_permille = 100});
  EXPECT_THROW(t16.restore(full.state()), Error);
  DataLoader one = DataLoader::open({p1}, o);
  EXPECT_THROW(one.restore(full.state()), Error);
  for (const char* bad : {"", "{}", "[1]", R"({"format":"dsa-data-position 1","seed":"1","consumed":"-2","fingerprint":"3"})",
                          R"({"format":"dsa-data-position 1","seed":"1","consumed":"2","fingerprint":"3","x":1})",
                          R"({"format":"dsa-data-position 1","seed":1,"consumed":"2","fingerprint":"3"})"})
    EXPECT_THROW(LoaderState::from_json(bad), Error) << bad;
}

TEST(TrainLoader, ValidationSplitIsDisjointAndIndependentOfSharding) {
  const fs::path d = temp_dir("split");
  const std::vector<Doc> docs = random_docs(400, 11);
  const std::string all = write_shard(d / "all.dsatok", docs);
  const std::string lo = write_shard(d / "lo.dsatok", {docs.begin(), docs.begin() + 150});
  const std::string hi = write_shard(d / "hi.dsatok", {docs.begin() + 150, docs.end()});
  const uint32_t permille = 200;
  std::set<std::vector<uint32_t>> val, train;
  for (const Doc& x : docs) {
    const std::vector<uint32_t> u(x.begin(), x.end());
    (is_validation_doc(u, permille) ? val : train).insert(u);
  }
  EXPECT_GT(val.size(), 40u);  // 400 documents at 20%: 80 expected
  EXPECT_LT(val.size(), 120u);
  for (const auto& v : val) EXPECT_EQ(train.count(v), 0u);
  // The loaders' streams hold exactly those documents: rebuild them from BOS-separated sequences.
  auto stream_docs = [&](const std::vector<std::string>& paths, Split split) {
    DataLoader L = DataLoader::open(paths, {.T = 64, .B = 1, .split = split, .val_permille = permille});
    std::vector<std::vector<int32_t>> seqs(L.sequences_per_epoch());
    for (uint64_t i = 0; i < L.sequences_per_epoch(); ++i) {
      const Batch b = L.batch_at(i, 1);
      if (split == Split::kValidation) {
        EXPECT_EQ(b.sequence_ids[0], i);
      }
      seqs.at(b.sequence_ids[0]) = b.tokens;
    }
    std::vector<int32_t> stream;
    for (size_t i = 0; i < seqs.size(); ++i) {
      EXPECT_FALSE(seqs[i].empty()) << "sequence " << i << " never sampled in one epoch";
      stream.insert(stream.end(), seqs[i].begin() + (i ? 1 : 0), seqs[i].end());  // stride T: 1 overlap
    }
    std::set<std::vector<uint32_t>> out;
    std::vector<uint32_t> cur;
    for (size_t k = 1; k < stream.size(); ++k) {
      if (stream[k] == kBosId) {
        out.insert(cur);
        cur.clear();
      } else {
        cur.push_back(uint32_t(stream[k]));
      }
    }
    return out;  // the last (possibly cut) document is left out
  };
  for (Split split : {Split::kValidation, Split::kTrain}) {
    const auto& expect = split == Split::kValidation ? val : train;
    const auto one = stream_docs({all}, split), two = stream_docs({lo, hi}, split);
    for (const auto& x : one) EXPECT_EQ(expect.count(x), 1u);
    // Left out: the document cut by the stream's end and the last (L-1) mod T < T tokens, which
    // form no sequence.
    uint64_t missing = 0;
    for (const auto& x : expect) missing += one.count(x) ? 0 : x.size() + 1;
    EXPECT_LE(missing, 64u + 41u);
    EXPECT_EQ(one, two);  // same documents whatever the sharding
  }
  DataLoader v1 = DataLoader::open({all}, {.T = 64, .B = 1, .split = Split::kValidation, .val_permille = permille});
  DataLoader v2 = DataLoader::open({lo, hi}, {.T = 64, .B = 1, .split = Split::kValidation, .val_permille = permille});
  EXPECT_EQ(v1.stream_tokens(), v2.stream_tokens());
}

TEST(TrainCorpus, BuildFromJsonlIsDeterministicAndRoundTrips) {
  DSA_REQUIRE_TOKENIZER(tok);
  const fs::path d = temp_dir("corpus");
  fs::create_directories(d / "text/text");
  fs::create_directories(d / "text/licenses");
  std::vector<std::string> texts;
  {
    std::ofstream a(d / "text/text/aaa.jsonl"), b(d / "text/text/bbb.jsonl");
    for (int i = 0; i < 60; ++i) {
      texts.push_back(fmt::format("Document {} of source aaa: the quick brown fox, {} times.\n", i, i * 7));
      a << nlohmann::json{{"name", fmt::format("a/{}", i)}, {"text", texts.back()}}.dump() << "\n";
    }
    b << R"({"name": "b/0", "text": "def f(x):\n    return x * 2  # <｜begin▁of▁sentence｜> stays text\n"})" << "\n";
    b << R"({"name": "b/empty", "text": ""})" << "\n";
  }
  std::ofstream(d / "text/LICENSES.md") << "# licences\n";
  std::ofstream(d / "text/licenses/x.copyright") << "copyright\n";
  CorpusBuildOptions o;
  o.text_dir = (d / "text").string();
  o.tokenizer_path = DSA_SOURCE_DIR "/third_party/tokenizer/tokenizer.json";
  if (const char* env = std::getenv("DSA_TOKENIZER")) o.tokenizer_path = env;
  o.shard_tokens = 200;
  o.quiet = true;
  std::vector<std::string> bytes_by_threads[2];
  for (int t : {1, 2}) {
    o.out_dir = (d / fmt::format("out{}", t)).string();
    o.threads = t;
    const CorpusSummary s = build_corpus(o);
    EXPECT_GE(s.shards.size(), 3u);
    EXPECT_EQ(s.sources.at("aaa").documents, 60u);
    EXPECT_EQ(s.sources.at("bbb").documents, 1u);
    EXPECT_EQ(s.sources.at("bbb").skipped, 1u);
    EXPECT_EQ(s.tokenizer_hash, tokenizer_fingerprint(*tok));
    for (const std::string& f : s.shards) bytes_by_threads[t == 1 ? 0 : 1].push_back(slurp(f));
    EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "manifest.json"));
    EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "LICENSES.md"));
    EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "licenses/x.copyright"));
    const CorpusSummary st = corpus_stats({o.out_dir}, 5);
    EXPECT_EQ(st.tokens, s.tokens);
    EXPECT_EQ(st.documents, 61u);
    EXPECT_EQ(st.source_order, (std::vector<std::string>{"aaa", "bbb"}));
    // Every document decodes back to its text; special-token strings in the text stay plain text.
    size_t k = 0;
    std::string last;
    for (const std::string& f : s.shards) {
      const ShardReader r = ShardReader::open(f);
      for (uint64_t i = 0; i < r.n_docs(); ++i, ++k) {
        std::vector<int32_t> ids(r.tokens().begin() + long(r.doc_begin(i)), r.tokens().begin() + long(r.doc_end(i)));
        for (int32_t id : ids) EXPECT_FALSE(tok->is_special(id));
        last = tok->decode(ids);
        if (k < texts.size()) {
          EXPECT_EQ(last, texts[k]);
        }
      }
    }
    EXPECT_EQ(last, "def f(x):\n    return x * 2  # <｜begin▁of▁sentence｜> stays text\n");
  }
  EXPECT_EQ(bytes_by_threads[0], bytes_by_threads[1]);  // thread count does not change the shards
  // An existing output needs --overwrite; bad JSONL names file:line.
  o.threads = 1;
  EXPECT_THROW(build_corpus(o), Error);
  o.overwrite = true;
  EXPECT_NO_THROW(build_corpus(o));
  std::ofstream(d / "text/text/ccc.jsonl") << R"({"text": "ok"})" << "\n" << "{not json\n";
  try {
    build_corpus(o);
    ADD_FAILURE() << "bad JSONL accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ccc.jsonl:2"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dsa::train
