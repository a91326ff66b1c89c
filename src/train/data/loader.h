// Packing and sampling over a set of shards: documents with BOS concatenated into one stream, cut
// into sequences of T+1 tokens; (seed, position) -> batch, deterministic and seekable; a
// validation split of held-out documents (docs/data.md §Packing).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "train/data/shard.h"

namespace dsa::train {

inline constexpr int32_t kBosId = 0;

enum class Split { kTrain, kValidation };

// B sequences of T+1 tokens: inputs tokens[b, 0..T-1], targets tokens[b, 1..T];
// weights[b, t] is the loss weight of target tokens[b, t+1].
struct Batch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> tokens;   // [B, T+1]
  std::vector<float> weights;    // [B, T]
  std::vector<uint64_t> sequence_ids;  // [B] index of each sequence in the split's stream (diagnostics)
};

// The data position a checkpoint saves: the next batch starts at sequence `consumed` of the
// seeded order. `fingerprint` identifies the data (shards, T, split, held-out fraction), so a
// restore onto other data is refused. B may change across a restore.
struct LoaderState {
  uint64_t seed = 0;
  uint64_t consumed = 0;
  uint64_t fingerprint = 0;
  std::string to_json() const;
  static LoaderState from_json(std::string_view json);  // throws dsa::Error on malformed input
  bool operator==(const LoaderState&) const = default;
};

struct LoaderOptions {
  int64_t T = 0, B = 0;
  uint64_t seed = 0;
  Split split = Split::kTrain;
  // Per mille of documents held out for validation (by content hash, see is_validation_doc).
  uint32_t val_permille = 5;
  // Token ids must be < this (the model's vocabulary); 0 = accept the shards' vocab_size.
  uint32_t max_vocab = 0;
};

// A document is held out iff splitmix64(FNV-1a-64 of its ids as u32 LE) % 1000 < val_permille:
// the same document is in the same split whatever the sharding, order or seed.
bool is_validation_doc(std::span<const uint32_t> ids, uint32_t val_permille);

// Not thread-safe (the current epoch's permutation is cached); one loader per thread.
class DataLoader {
 public:
  static DataLoader open(const std::vector<std::string>& paths, const LoaderOptions& opts);
  DataLoader(DataLoader&&) noexcept;
  DataLoader& operator=(DataLoader&&) noexcept;
  ~DataLoader();

  // The next B sequences. Training: epoch e visits every sequence once, in a permutation fixed by
  // (seed, e). Validation: the stream order, wrapping around.
  Batch next();
  // Batch of `B` sequences starting at global position `first` (= step * B), without moving.
  Batch batch_at(uint64_t first, int64_t B) const;

  LoaderState state() const;
  // Continues exactly where `s` was taken (adopting its seed); throws dsa::Error if s belongs to
  // other data (fingerprint mismatch).
  void restore(const LoaderState& s);
  void seek(uint64_t step) { consumed_ = step * uint64_t(opts_.B); }
  void rewind() { consumed_ = 0; }

  int64_t T() const { return opts_.T; }
  int64_t B() const { return opts_.B; }
  uint64_t sequences_per_epoch() const { return n_seq_; }
  uint64_t documents() const { return doc_start_.size() - 1; }
  uint64_t stream_tokens() const { return doc_start_.back(); }  // split's tokens incl. one BOS per document
  uint64_t epoch() const { return consumed_ / n_seq_; }
  uint32_t vocab_size() const { return vocab_size_; }
  uint64_t tokenizer_hash() const { return tokenizer_hash_; }
  uint64_t fingerprint() const { return fingerprint_; }

 private:
  DataLoader() = default;
  void read_sequence(uint64_t seq, int32_t* tokens, float* weights) const;
  uint64_t order(uint64_t global) const;  // global position -> sequence index

  struct DocRef {
    uint32_t shard;
    uint64_t doc;
  };
  LoaderOptions opts_;
  std::vector<std::unique_ptr<ShardReader>> shards_;
  std::vector<DocRef> docs_;         // documents of the split, in stream order
  std::vector<uint64_t> doc_start_;  // stream offset of each document's BOS; back() = stream length
  uint64_t n_seq_ = 0, consumed_ = 0, fingerprint_ = 0, tokenizer_hash_ = 0;
  uint32_t vocab_size_ = 0;
  mutable uint64_t perm_epoch_ = ~uint64_t(0);  // epoch whose permutation perm_ holds
  mutable std::vector<uint32_t> perm_;
};

}  // namespace dsa::train
