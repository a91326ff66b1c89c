// Shard writer (streaming, side files for the index and weights) and the validating mmap reader.
#include "train/data/shard.h"

#include <zlib.h>

#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <set>

#include "base/error.h"
#include "base/hash.h"

namespace dsa::train {

static_assert(std::endian::native == std::endian::little, "shards are little-endian; so must the host be");

namespace {

uint32_t crc_update(uint32_t crc, const void* p, size_t n) {
  const auto* b = static_cast<const Bytef*>(p);
  while (n > 0) {  // crc32_z takes size_t, but keep chunks modest for older zlibs
    const size_t k = n < (size_t(1) << 30) ? n : (size_t(1) << 30);
    crc = uint32_t(crc32_z(crc, b, k));
    b += k;
    n -= k;
  }
  return crc;
}

uint64_t align8(uint64_t x) { return (x + 7) & ~uint64_t(7); }

size_t weight_bytes(WeightKind k) { return k == WeightKind::kU8 ? 1 : k == WeightKind::kF32 ? 4 : 0; }

// Section offsets are fully determined by the counts: the writer writes them, the reader demands them.
void layout(ShardHeader& h, uint64_t sources_bytes) {
  h.tokens_offset = kShardHeaderBytes;
  h.docs_offset = align8(h.tokens_offset + 4 * h.n_tokens);
  h.doc_source_offset = align8(h.docs_offset + 8 * (h.n_docs + 1));
  uint64_t end = align8(h.doc_source_offset + 4 * h.n_docs);
  h.weights_offset = 0;
  if (h.weights != WeightKind::kNone) {
    h.weights_offset = end;
    end = align8(end + weight_bytes(h.weights) * h.n_tokens);
  }
  h.sources_offset = end;
  h.file_bytes = h.sources_offset + sources_bytes;
}

template <class T>
void put(uint8_t* b, size_t off, T v) {
  std::memcpy(b + off, &v, sizeof v);
}
template <class T>
T get(const uint8_t* b, size_t off) {
  T v;
  std::memcpy(&v, b + off, sizeof v);
  return v;
}

void encode_header(const ShardHeader& h, uint8_t* b) {
  std::memset(b, 0, kShardHeaderBytes);
  std::memcpy(b, kShardMagic, 8);
  put<uint32_t>(b, 8, h.version);
  put<uint32_t>(b, 12, kShardHeaderBytes);
  put<uint32_t>(b, 16, h.vocab_size);
  put<uint32_t>(b, 20, uint32_t(h.weights));
  put<uint64_t>(b, 24, h.tokenizer_hash);
  put<uint64_t>(b, 32, h.n_tokens);
  put<uint64_t>(b, 40, h.n_docs);
  put<uint32_t>(b, 48, h.n_sources);
  put<uint64_t>(b, 56, h.tokens_offset);
  put<uint64_t>(b, 64, h.docs_offset);
  put<uint64_t>(b, 72, h.doc_source_offset);
  put<uint64_t>(b, 80, h.weights_offset);
  put<uint64_t>(b, 88, h.sources_offset);
  put<uint64_t>(b, 96, h.file_bytes);
  put<uint32_t>(b, 104, h.body_crc32);
  put<uint32_t>(b, 108, crc_update(0, b, 108));
}

std::FILE* open_write(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "wb+");
  DSA_CHECK(f != nullptr, "{}: cannot create: {}", path, std::strerror(errno));
  return f;
}

void write_checked(std::FILE* f, const void* p, size_t n, const std::string& path) {
  if (n > 0 && std::fwrite(p, 1, n, f) != n) DSA_FAIL("{}: write failed: {}", path, std::strerror(errno));
}

}  // namespace

const char* weight_kind_name(WeightKind k) {
  switch (k) {
    case WeightKind::kNone: return "none";
    case WeightKind::kU8: return "u8";
    case WeightKind::kF32: return "f32";
  }
  return "?";
}

uint64_t fnv1a64_ids(std::span<const uint32_t> ids) {
  uint64_t h = kFnv1aOffset;
  for (uint32_t u : ids) h = fnv1a_le(h, u);
  return h;
}

// ---- writer ---------------------------------------------------------------------------------

ShardWriter::ShardWriter(const std::string& path, const ShardWriterOptions& opts)
    : path_(path), tmp_(path + ".tmp"), ends_tmp_(path + ".ends.tmp"), srcs_tmp_(path + ".srcs.tmp"),
      w_tmp_(path + ".weights.tmp"), opts_(opts) {
  DSA_CHECK(opts.vocab_size > 0, "{}: vocab_size must be > 0", path);
  DSA_CHECK(opts.weights == WeightKind::kNone || opts.weights == WeightKind::kU8 || opts.weights == WeightKind::kF32,
            "{}: unknown weight kind {}", path, uint32_t(opts.weights));
  try {
    main_ = open_write(tmp_);
    ends_ = open_write(ends_tmp_);
    srcs_ = open_write(srcs_tmp_);
    if (opts.weights != WeightKind::kNone) w_ = open_write(w_tmp_);
    const uint8_t zeros[kShardHeaderBytes] = {};
    write_checked(main_, zeros, sizeof zeros, tmp_);  // header placeholder, patched by finish()
    const uint64_t zero = 0;
    write_checked(ends_, &zero, 8, ends_tmp_);  // docs[0] = 0
  } catch (...) {
    cleanup();
    throw;
  }
}

ShardWriter::~ShardWriter() {
  if (!finished_) cleanup();
}

void ShardWriter::cleanup() noexcept {
  for (std::FILE** f : {&main_, &ends_, &srcs_, &w_}) {
    if (*f) std::fclose(*f);
    *f = nullptr;
  }
  for (const std::string* p : {&ends_tmp_, &srcs_tmp_, &w_tmp_}) std::remove(p->c_str());
  if (!finished_) std::remove(tmp_.c_str());
}

void ShardWriter::write_main(const void* p, size_t n) {
  write_checked(main_, p, n, tmp_);
  crc_ = crc_update(crc_, p, n);
}

void ShardWriter::pad_main() {
  const uint8_t zeros[8] = {};
  const long pos = std::ftell(main_);
  DSA_CHECK(pos >= 0, "{}: ftell failed: {}", tmp_, std::strerror(errno));
  write_main(zeros, size_t(align8(uint64_t(pos)) - uint64_t(pos)));
}

void ShardWriter::append_file(std::FILE*& f, const std::string& name) {
  DSA_CHECK(std::fflush(f) == 0 && std::fseek(f, 0, SEEK_SET) == 0, "{}: cannot rewind: {}", name,
            std::strerror(errno));
  std::vector<uint8_t> buf(1 << 20);
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) write_main(buf.data(), n);
  DSA_CHECK(!std::ferror(f), "{}: read failed: {}", name, std::strerror(errno));
  std::fclose(f);
  f = nullptr;
  std::remove(name.c_str());
}

uint32_t ShardWriter::add_source(const std::string& name) {
  DSA_CHECK(!finished_, "{}: add_source after finish()", path_);
  DSA_CHECK(!name.empty() && name.size() < 4096, "{}: source names must be 1..4095 bytes", path_);
  for (const std::string& s : sources_) DSA_CHECK(s != name, "{}: source '{}' added twice", path_, name);
  sources_.push_back(name);
  return uint32_t(sources_.size() - 1);
}

void ShardWriter::add_document(std::span<const int32_t> tokens, uint32_t source, std::span<const float> weights) {
  DSA_CHECK(!finished_, "{}: add_document after finish()", path_);
  DSA_CHECK(!tokens.empty(), "{}: document {} is empty (documents need >= 1 token)", path_, n_docs_);
  DSA_CHECK(source < sources_.size(), "{}: document {}: source id {} not registered ({} sources)", path_, n_docs_,
            source, sources_.size());
  if (opts_.weights == WeightKind::kNone) {
    DSA_CHECK(weights.empty(), "{}: document {}: weights given to a shard without weights", path_, n_docs_);
  } else {
    DSA_CHECK(weights.size() == tokens.size(), "{}: document {}: {} weights for {} tokens", path_, n_docs_,
              weights.size(), tokens.size());
  }
  buf_.resize(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    DSA_CHECK(tokens[i] >= 0 && uint32_t(tokens[i]) < opts_.vocab_size, "{}: document {}: token id {} outside [0, {})",
              path_, n_docs_, tokens[i], opts_.vocab_size);
    buf_[i] = uint32_t(tokens[i]);
  }
  if (opts_.weights == WeightKind::kU8) {
    std::vector<uint8_t> w(weights.size());
    for (size_t i = 0; i < weights.size(); ++i) {
      const float x = weights[i];
      DSA_CHECK(x >= 0 && x <= 255 && x == std::floor(x), "{}: document {}: weight {} is not an integer in 0..255 (u8)",
                path_, n_docs_, x);
      w[i] = uint8_t(x);
    }
    write_checked(w_, w.data(), w.size(), w_tmp_);
  } else if (opts_.weights == WeightKind::kF32) {
    for (float x : weights)
      DSA_CHECK(std::isfinite(x) && x >= 0, "{}: document {}: weight {} is not finite and >= 0", path_, n_docs_, x);
    write_checked(w_, weights.data(), 4 * weights.size(), w_tmp_);
  }
  write_main(buf_.data(), 4 * buf_.size());
  n_tokens_ += tokens.size();
  ++n_docs_;
  write_checked(ends_, &n_tokens_, 8, ends_tmp_);
  write_checked(srcs_, &source, 4, srcs_tmp_);
}

void ShardWriter::finish() {
  DSA_CHECK(!finished_, "{}: finish() called twice", path_);
  DSA_CHECK(n_docs_ > 0, "{}: no documents were added", path_);
  DSA_CHECK(n_tokens_ < (uint64_t(1) << 40), "{}: too many tokens for one shard", path_);
  pad_main();
  append_file(ends_, ends_tmp_);
  pad_main();
  append_file(srcs_, srcs_tmp_);
  pad_main();
  if (w_) {
    append_file(w_, w_tmp_);
    pad_main();
  }
  uint64_t sources_bytes = 0;
  for (const std::string& s : sources_) {
    const uint32_t n = uint32_t(s.size());
    write_main(&n, 4);
    write_main(s.data(), s.size());
    sources_bytes += 4 + s.size();
  }
  ShardHeader h;
  h.vocab_size = opts_.vocab_size;
  h.weights = opts_.weights;
  h.tokenizer_hash = opts_.tokenizer_hash;
  h.n_tokens = n_tokens_;
  h.n_docs = n_docs_;
  h.n_sources = uint32_t(sources_.size());
  layout(h, sources_bytes);
  const long pos = std::ftell(main_);
  DSA_CHECK(pos >= 0 && uint64_t(pos) == h.file_bytes, "{}: internal layout error ({} vs {} bytes)", tmp_, pos,
            h.file_bytes);
  h.body_crc32 = crc_;
  uint8_t hb[kShardHeaderBytes];
  encode_header(h, hb);
  DSA_CHECK(std::fseek(main_, 0, SEEK_SET) == 0, "{}: seek failed: {}", tmp_, std::strerror(errno));
  write_checked(main_, hb, sizeof hb, tmp_);
  const int rc = std::fclose(main_);
  main_ = nullptr;
  if (rc != 0) {
    cleanup();
    DSA_FAIL("{}: close failed: {}", tmp_, std::strerror(errno));
  }
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    cleanup();
    DSA_FAIL("{}: cannot rename to {}: {}", tmp_, path_, std::strerror(err));
  }
  finished_ = true;
  cleanup();
}

// ---- reader ---------------------------------------------------------------------------------

float ShardReader::weight(uint64_t i) const {
  switch (h_.weights) {
    case WeightKind::kU8: return float(w_[i]);
    case WeightKind::kF32: return get<float>(w_, 4 * i);
    default: return 1.0f;
  }
}

ShardReader ShardReader::open(const std::string& path) {
  ShardReader r;
  r.file_ = MmapFile::open(path);
  const uint8_t* b = r.file_.data();
  const uint64_t size = r.file_.size();
  DSA_CHECK(size >= kShardHeaderBytes, "{}: not a dsa token shard ({} bytes, shorter than the {}-byte header)", path,
            size, kShardHeaderBytes);
  DSA_CHECK(std::memcmp(b, kShardMagic, 8) == 0, "{}: not a dsa token shard (bad magic)", path);
  ShardHeader& h = r.h_;
  h.version = get<uint32_t>(b, 8);
  DSA_CHECK(h.version == kShardVersion, "{}: shard format version {} is not supported (this build reads version {})",
            path, h.version, kShardVersion);
  DSA_CHECK(get<uint32_t>(b, 108) == crc_update(0, b, 108), "{}: header checksum mismatch (corrupt header)", path);
  DSA_CHECK(get<uint32_t>(b, 12) == kShardHeaderBytes, "{}: header size {} != {}", path, get<uint32_t>(b, 12),
            kShardHeaderBytes);
  h.vocab_size = get<uint32_t>(b, 16);
  const uint32_t wk = get<uint32_t>(b, 20);
  DSA_CHECK(wk <= 2, "{}: unknown weight kind {}", path, wk);
  h.weights = WeightKind(wk);
  h.tokenizer_hash = get<uint64_t>(b, 24);
  h.n_tokens = get<uint64_t>(b, 32);
  h.n_docs = get<uint64_t>(b, 40);
  h.n_sources = get<uint32_t>(b, 48);
  DSA_CHECK(h.vocab_size > 0 && h.n_docs > 0 && h.n_tokens >= h.n_docs && h.n_tokens < (uint64_t(1) << 40) &&
                h.n_sources > 0,
            "{}: implausible header (vocab {}, {} tokens, {} documents, {} sources)", path, h.vocab_size, h.n_tokens,
            h.n_docs, h.n_sources);
  ShardHeader expect = h;
  const uint64_t stored_sources = get<uint64_t>(b, 88), stored_bytes = get<uint64_t>(b, 96);
  DSA_CHECK(stored_bytes >= stored_sources, "{}: header: sources offset {} past the end {}", path, stored_sources,
            stored_bytes);
  layout(expect, stored_bytes - stored_sources);
  h.tokens_offset = get<uint64_t>(b, 56);
  h.docs_offset = get<uint64_t>(b, 64);
  h.doc_source_offset = get<uint64_t>(b, 72);
  h.weights_offset = get<uint64_t>(b, 80);
  h.sources_offset = stored_sources;
  h.file_bytes = stored_bytes;
  h.body_crc32 = get<uint32_t>(b, 104);
  DSA_CHECK(h.tokens_offset == expect.tokens_offset && h.docs_offset == expect.docs_offset &&
                h.doc_source_offset == expect.doc_source_offset && h.weights_offset == expect.weights_offset &&
                h.sources_offset == expect.sources_offset,
            "{}: header section offsets do not match its counts (corrupt header)", path);
  DSA_CHECK(size == h.file_bytes, "{}: file is {} bytes but its header says {} ({})", path, size, h.file_bytes,
            size < h.file_bytes ? "truncated" : "trailing bytes");
  DSA_CHECK(crc_update(0, b + kShardHeaderBytes, size - kShardHeaderBytes) == h.body_crc32,
            "{}: data checksum mismatch (corrupt file)", path);

  r.tok_ = reinterpret_cast<const uint32_t*>(b + h.tokens_offset);
  r.docs_ = reinterpret_cast<const uint64_t*>(b + h.docs_offset);
  r.src_ = reinterpret_cast<const uint32_t*>(b + h.doc_source_offset);
  r.w_ = h.weights_offset ? b + h.weights_offset : nullptr;
  // Source names.
  uint64_t off = h.sources_offset;
  std::set<std::string> seen;
  for (uint32_t i = 0; i < h.n_sources; ++i) {
    DSA_CHECK(off + 4 <= size, "{}: source table cut short", path);
    const uint32_t n = get<uint32_t>(b, off);
    DSA_CHECK(n > 0 && off + 4 + n <= size, "{}: source {} name out of bounds", path, i);
    r.source_names_.emplace_back(reinterpret_cast<const char*>(b + off + 4), n);
    DSA_CHECK(seen.insert(r.source_names_.back()).second, "{}: source '{}' listed twice", path, r.source_names_.back());
    off += 4 + n;
  }
  DSA_CHECK(off == size, "{}: {} unexplained bytes after the source table", path, size - off);
  // Document index, source ids, token ids, weights.
  DSA_CHECK(r.docs_[0] == 0 && r.docs_[h.n_docs] == h.n_tokens, "{}: document index does not span the tokens", path);
  for (uint64_t i = 0; i < h.n_docs; ++i) {
    DSA_CHECK(r.docs_[i] < r.docs_[i + 1], "{}: document {} is empty or out of order", path, i);
    DSA_CHECK(r.src_[i] < h.n_sources, "{}: document {} has source id {} of {}", path, i, r.src_[i], h.n_sources);
  }
  uint32_t max_id = 0;
  for (uint64_t i = 0; i < h.n_tokens; ++i) max_id = r.tok_[i] > max_id ? r.tok_[i] : max_id;
  DSA_CHECK(max_id < h.vocab_size, "{}: token id {} >= vocab size {}", path, max_id, h.vocab_size);
  if (h.weights == WeightKind::kF32) {
    for (uint64_t i = 0; i < h.n_tokens; ++i) {
      const float x = get<float>(r.w_, 4 * i);
      DSA_CHECK(std::isfinite(x) && x >= 0, "{}: weight of token {} is {} (must be finite, >= 0)", path, i, x);
    }
  }
  return r;
}

}  // namespace dsa::train
