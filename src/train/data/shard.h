// Tokenised shards (.dsatok, format version 1, docs/data.md): token ids + document boundaries +
// optional per-token loss weights; a streaming writer and a validating memory-mapped reader.
#pragma once
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include "base/mmap_file.h"

namespace dsa::train {

inline constexpr char kShardMagic[8] = {'D', 'S', 'A', 'T', 'O', 'K', 'S', '\0'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr uint32_t kShardHeaderBytes = 128;

enum class WeightKind : uint32_t { kNone = 0, kU8 = 1, kF32 = 2 };
const char* weight_kind_name(WeightKind k);

// The fixed 128-byte little-endian header (docs/data.md has the byte layout).
struct ShardHeader {
  uint32_t version = kShardVersion;
  uint32_t vocab_size = 0;            // every token id is < vocab_size
  WeightKind weights = WeightKind::kNone;
  uint64_t tokenizer_hash = 0;        // tokenizer_fingerprint() of the tokenizer that made the ids
  uint64_t n_tokens = 0, n_docs = 0;
  uint32_t n_sources = 0;
  uint64_t tokens_offset = 0, docs_offset = 0, doc_source_offset = 0, weights_offset = 0,
           sources_offset = 0, file_bytes = 0;
  uint32_t body_crc32 = 0;            // CRC-32 (zlib) of bytes [128, file_bytes)
};

struct ShardWriterOptions {
  uint32_t vocab_size = 0;
  uint64_t tokenizer_hash = 0;
  WeightKind weights = WeightKind::kNone;
};

// Streams documents into a shard with bounded memory: token ids go to `path + ".tmp"` as they
// come, the document index and weights to two side files; finish() appends those, patches the
// header (counts, offsets, checksums) and renames the file to `path`. A writer destroyed without
// finish() removes its temporary files, so a crashed build never leaves a valid-looking shard.
class ShardWriter {
 public:
  ShardWriter(const std::string& path, const ShardWriterOptions& opts);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Registers a source name (e.g. "man"); returns its id for add_document. Names are unique.
  uint32_t add_source(const std::string& name);
  // Appends one document (>= 1 token, ids < vocab_size). `weights` must be empty for kNone and
  // have one entry per token otherwise (kU8: integers 0..255; kF32: finite, >= 0).
  void add_document(std::span<const int32_t> tokens, uint32_t source, std::span<const float> weights = {});
  void finish();

  uint64_t tokens() const { return n_tokens_; }
  uint64_t documents() const { return n_docs_; }
  const std::string& path() const { return path_; }

 private:
  void write_main(const void* p, size_t n);
  void pad_main();
  void append_file(std::FILE*& f, const std::string& name);
  void cleanup() noexcept;
  std::string path_, tmp_, ends_tmp_, srcs_tmp_, w_tmp_;
  ShardWriterOptions opts_;
  std::FILE* main_ = nullptr;
  std::FILE* ends_ = nullptr;  // side files: u64 end offset and u32 source id per document,
  std::FILE* srcs_ = nullptr;  // the weights per token
  std::FILE* w_ = nullptr;
  std::vector<std::string> sources_;
  uint64_t n_tokens_ = 0, n_docs_ = 0;
  uint32_t crc_ = 0;
  bool finished_ = false;
  std::vector<uint32_t> buf_;
};

// Read-only view of one shard. open() checks the magic, version, header checksum, section
// offsets against the file size (truncation), the body checksum, the document index (starts at
// 0, strictly increasing, ends at n_tokens), source ids, every token id < vocab_size and the
// weights (finite, >= 0); any failure is a dsa::Error naming the file and what is wrong.
class ShardReader {
 public:
  static ShardReader open(const std::string& path);

  const ShardHeader& header() const { return h_; }
  const std::string& path() const { return file_.path(); }
  uint64_t n_tokens() const { return h_.n_tokens; }
  uint64_t n_docs() const { return h_.n_docs; }
  std::span<const uint32_t> tokens() const { return {tok_, size_t(h_.n_tokens)}; }
  // Document i covers tokens [doc_begin(i), doc_end(i)).
  uint64_t doc_begin(uint64_t i) const { return docs_[i]; }
  uint64_t doc_end(uint64_t i) const { return docs_[i + 1]; }
  uint32_t doc_source(uint64_t i) const { return src_[i]; }
  const std::vector<std::string>& sources() const { return source_names_; }
  bool has_weights() const { return h_.weights != WeightKind::kNone; }
  // Loss weight of token i (1 when the shard has none).
  float weight(uint64_t i) const;

 private:
  MmapFile file_;
  ShardHeader h_;
  const uint32_t* tok_ = nullptr;
  const uint64_t* docs_ = nullptr;
  const uint32_t* src_ = nullptr;
  const uint8_t* w_ = nullptr;
  std::vector<std::string> source_names_;
};

// FNV-1a 64 over the ids as uint32 little-endian bytes (the validation split's document hash).
uint64_t fnv1a64_ids(std::span<const uint32_t> ids);

}  // namespace dsa::train
