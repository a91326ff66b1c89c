// DataLoader: the split's document stream (BOS + ids per document), sequences of T+1 tokens at
// stride T, per-epoch seeded permutations, and the serialisable data position.
#include "train/data/loader.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "base/hash.h"
#include "base/error.h"

namespace dsa::train {

namespace {


uint64_t parse_u64(const nlohmann::json& j, const char* key) {
  DSA_CHECK(j.contains(key) && j[key].is_string(), "data position: '{}' missing or not a string", key);
  const std::string s = j[key].get<std::string>();
  size_t used = 0;
  uint64_t v = 0;
  try {
    v = std::stoull(s, &used, 10);
  } catch (const std::exception&) {
    used = 0;
  }
  DSA_CHECK(!s.empty() && used == s.size() && s[0] != '-', "data position: '{}' = '{}' is not an unsigned integer",
            key, s);
  return v;
}

}  // namespace

bool is_validation_doc(std::span<const uint32_t> ids, uint32_t val_permille) {
  return splitmix64(fnv1a64_ids(ids)) % 1000 < val_permille;
}

std::string LoaderState::to_json() const {
  nlohmann::json j = {{"format", "dsa-data-position 1"},
                      {"seed", std::to_string(seed)},
                      {"consumed", std::to_string(consumed)},
                      {"fingerprint", std::to_string(fingerprint)}};
  return j.dump();
}

LoaderState LoaderState::from_json(std::string_view text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    DSA_FAIL("data position: not JSON: {}", e.what());
  }
  DSA_CHECK(j.is_object() && j.value("format", "") == "dsa-data-position 1",
            "data position: expected an object with format 'dsa-data-position 1'");
  for (auto it = j.begin(); it != j.end(); ++it)
    DSA_CHECK(it.key() == "format" || it.key() == "seed" || it.key() == "consumed" || it.key() == "fingerprint",
              "data position: unknown key '{}'", it.key());
  LoaderState s;
  s.seed = parse_u64(j, "seed");
  s.consumed = parse_u64(j, "consumed");
  s.fingerprint = parse_u64(j, "fingerprint");
  return s;
}

DataLoader::DataLoader(DataLoader&&) noexcept = default;
DataLoader& DataLoader::operator=(DataLoader&&) noexcept = default;
DataLoader::~DataLoader() = default;

DataLoader DataLoader::open(const std::vector<std::string>& paths, const LoaderOptions& opts) {
  DSA_CHECK(!paths.empty(), "data: no shard files given");
  DSA_CHECK(opts.T >= 1 && opts.T <= (int64_t(1) << 24), "data: sequence length T = {} must be in 1..2^24", opts.T);
  DSA_CHECK(opts.B >= 1 && opts.B <= (int64_t(1) << 20), "data: batch size B = {} must be in 1..2^20", opts.B);
  DSA_CHECK(opts.val_permille <= 1000, "data: val_permille = {} must be <= 1000", opts.val_permille);
  DataLoader L;
  L.opts_ = opts;
  uint64_t fp = kFnv1aOffset;
  fp = fnv1a_le<uint64_t>(fp, kShardVersion);
  fp = fnv1a_le<uint64_t>(fp, uint64_t(opts.T));
  fp = fnv1a_le<uint64_t>(fp, uint64_t(opts.split));
  fp = fnv1a_le<uint64_t>(fp, opts.val_permille);
  L.doc_start_.push_back(0);
  for (const std::string& p : paths) {
    auto r = std::make_unique<ShardReader>(ShardReader::open(p));
    const ShardHeader& h = r->header();
    if (L.shards_.empty()) {
      L.vocab_size_ = h.vocab_size;
      L.tokenizer_hash_ = h.tokenizer_hash;
    } else {
      DSA_CHECK(h.tokenizer_hash == L.tokenizer_hash_,
                "{}: made with another tokenizer (hash {:016x}) than {} ({:016x})", p, h.tokenizer_hash,
                paths[0], L.tokenizer_hash_);
      L.vocab_size_ = std::max(L.vocab_size_, h.vocab_size);
    }
    if (opts.max_vocab > 0)
      DSA_CHECK(h.vocab_size <= opts.max_vocab, "{}: shard vocabulary {} is larger than the model's {}", p,
                h.vocab_size, opts.max_vocab);
    fp = fnv1a_le<uint64_t>(fnv1a_le<uint64_t>(fnv1a_le<uint64_t>(fp, h.body_crc32), h.n_tokens), h.n_docs);
    const uint32_t si = uint32_t(L.shards_.size());
    for (uint64_t d = 0; d < r->n_docs(); ++d) {
      const uint64_t b = r->doc_begin(d), e = r->doc_end(d);
      const bool val = is_validation_doc(r->tokens().subspan(b, e - b), opts.val_permille);
      if (val != (opts.split == Split::kValidation)) continue;
      L.docs_.push_back({si, d});
      L.doc_start_.push_back(L.doc_start_.back() + 1 + (e - b));
    }
    L.shards_.push_back(std::move(r));
  }
  L.fingerprint_ = fp;
  const char* split = opts.split == Split::kTrain ? "training" : "validation";
  const uint64_t len = L.doc_start_.back();
  DSA_CHECK(!L.docs_.empty(), "data: the {} split is empty ({} shard(s), val_permille {})", split, paths.size(),
            opts.val_permille);
  L.n_seq_ = (len - 1) / uint64_t(opts.T);
  DSA_CHECK(L.n_seq_ >= 1, "data: the {} split has {} tokens (with BOS), fewer than T+1 = {}", split, len, opts.T + 1);
  DSA_CHECK(L.n_seq_ < (uint64_t(1) << 32), "data: {} sequences per epoch is more than this loader supports", L.n_seq_);
  return L;
}

uint64_t DataLoader::order(uint64_t global) const {
  const uint64_t epoch = global / n_seq_, k = global % n_seq_;
  if (opts_.split == Split::kValidation) return k;
  if (perm_epoch_ != epoch) {
    // Fisher-Yates driven by splitmix64 from (seed, epoch); j = r mod (i+1) (bias < 2^-32).
    perm_.resize(n_seq_);
    for (uint64_t i = 0; i < n_seq_; ++i) perm_[i] = uint32_t(i);
    uint64_t st = splitmix64(opts_.seed ^ splitmix64(epoch + 0x5EED));
    for (uint64_t i = n_seq_ - 1; i > 0; --i) {
      st = splitmix64(st);
      std::swap(perm_[i], perm_[st % (i + 1)]);
    }
    perm_epoch_ = epoch;
  }
  return perm_[k];
}

void DataLoader::read_sequence(uint64_t seq, int32_t* tokens, float* weights) const {
  const uint64_t p0 = seq * uint64_t(opts_.T);
  const int64_t n = opts_.T + 1;
  size_t d = size_t(std::upper_bound(doc_start_.begin(), doc_start_.end(), p0) - doc_start_.begin()) - 1;
  uint64_t p = p0;
  for (int64_t k = 0; k < n; ++d) {
    const DocRef& ref = docs_[d];
    const ShardReader& s = *shards_[ref.shard];
    const uint64_t begin = s.doc_begin(ref.doc);
    const uint64_t doc_len = 1 + s.doc_end(ref.doc) - begin;  // BOS + ids
    for (uint64_t o = p - doc_start_[d]; o < doc_len && k < n; ++o, ++k, ++p) {
      float w;
      if (o == 0) {
        tokens[k] = kBosId;
        w = s.has_weights() ? 0.0f : 1.0f;  // a BOS target counts in pretraining, not under SFT masks
      } else {
        tokens[k] = int32_t(s.tokens()[begin + o - 1]);
        w = s.weight(begin + o - 1);
      }
      if (k > 0) weights[k - 1] = w;
    }
  }
}

Batch DataLoader::batch_at(uint64_t first, int64_t B) const {
  DSA_CHECK(B >= 1, "data: batch size {} must be >= 1", B);
  Batch b;
  b.B = B;
  b.T = opts_.T;
  b.tokens.resize(size_t(B * (opts_.T + 1)));
  b.weights.resize(size_t(B * opts_.T));
  b.sequence_ids.resize(size_t(B));
  for (int64_t i = 0; i < B; ++i) {
    const uint64_t seq = order(first + uint64_t(i));
    b.sequence_ids[size_t(i)] = seq;
    read_sequence(seq, b.tokens.data() + i * (opts_.T + 1), b.weights.data() + i * opts_.T);
  }
  return b;
}

Batch DataLoader::next() {
  Batch b = batch_at(consumed_, opts_.B);
  consumed_ += uint64_t(opts_.B);
  return b;
}

LoaderState DataLoader::state() const { return {opts_.seed, consumed_, fingerprint_}; }

void DataLoader::restore(const LoaderState& s) {
  DSA_CHECK(s.fingerprint == fingerprint_,
            "data: the saved data position belongs to other data (fingerprint {} != {}: other shards, T, split "
            "or val_permille)",
            s.fingerprint, fingerprint_);
  if (s.seed != opts_.seed) perm_epoch_ = ~uint64_t(0);
  opts_.seed = s.seed;
  consumed_ = s.consumed;
}

}  // namespace dsa::train
