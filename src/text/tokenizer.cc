// Tokenizer: tokenizer.json loading, encode (added tokens -> regex pieces -> cached BPE), decode,
// and the incremental (UTF-8 safe) decoder.
#include "text/tokenizer.h"

#include <algorithm>
#include <fstream>
#include <mutex>
#include <queue>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/files.h"
#include "io/json.h"
#include "text/pretokenize.h"
#include "text/split_v3.h"
#include "text/utf8.h"

namespace dsa::text {

namespace {

// GPT-2 byte <-> printable code point map used by ByteLevel.
struct ByteLevelMap {
  char32_t byte_to_cp[256];
  std::unordered_map<char32_t, uint8_t> cp_to_byte;
  ByteLevelMap() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      byte_to_cp[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      cp_to_byte[byte_to_cp[b]] = static_cast<uint8_t>(b);
    }
  }
};

const ByteLevelMap& byte_level() {
  static const ByteLevelMap m;
  return m;
}

// Decodes one code point from valid UTF-8 at s[i], advancing i.
char32_t next_cp(std::string_view s, size_t& i) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  if (b0 < 0x80) return s[i++];
  const int n = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : 2;
  char32_t cp = b0 & (0x7F >> n);
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3F);
  i += static_cast<size_t>(n);
  return cp;
}

// ByteLevel-decodes a token string: every char through the map, or the raw UTF-8 if any char is
// outside the map (what HF's ByteLevel decoder does for added tokens like <｜User｜>).
bool byte_level_decode(std::string_view s, std::string* out) {
  const auto& m = byte_level();
  std::string r;
  for (size_t i = 0; i < s.size();) {
    auto it = m.cp_to_byte.find(next_cp(s, i));
    if (it == m.cp_to_byte.end()) return false;
    r += static_cast<char>(it->second);
  }
  *out = std::move(r);
  return true;
}

std::string read_file(const std::string& path) { return read_text_file(path, 1u << 30, "tokenizer file"); }

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// An added token found in the text.
struct Hit {
  size_t pos, len;
  int32_t id;
};

struct MergeInfo {
  int32_t rank;
  int32_t id;
};

constexpr size_t kCacheMaxEntries = 1 << 18;
constexpr size_t kCacheMaxWordBytes = 256;

}  // namespace

struct Tokenizer::Impl {
  std::vector<std::string> bytes_of;  // id -> raw bytes
  std::vector<uint8_t> special;       // id -> flagged special
  std::vector<uint8_t> defined;       // id -> exists
  std::unordered_map<std::string, int32_t> vocab;  // raw bytes -> id (BPE vocab)
  std::unordered_map<std::string, int32_t> added;  // content -> id
  std::unordered_map<uint64_t, MergeInfo> merges;
  int32_t byte_id[256];
  AddedTokenMatcher added_raw;     // normalized=false tokens (matched first)
  AddedTokenMatcher added_norm;    // normalized=true tokens (matched in the gaps)
  AddedTokenMatcher nonspecial_raw, nonspecial_norm;  // same without special tokens
  std::unique_ptr<PieceSplitter> splitter;
  bool regex_splitter = false;

  mutable std::mutex cache_mu;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  void bpe(std::string_view word, std::vector<int32_t>& out) const;
  void encode_plain(std::string_view text, std::vector<int32_t>& out, bool use_cache) const;
  std::vector<int32_t> encode_hits(std::string_view text, std::span<const Hit> hits) const;
};

// Byte pair merging: repeatedly merge the lowest-rank adjacent pair (leftmost among equal ranks).
void Tokenizer::Impl::bpe(std::string_view word, std::vector<int32_t>& out) const {
  const size_t n = word.size();
  if (n == 1) {
    out.push_back(byte_id[static_cast<uint8_t>(word[0])]);
    return;
  }
  struct Sym {
    int32_t id, prev, next;
  };
  struct Cand {
    int32_t rank, pos, left, right;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  thread_local std::vector<Sym> sym;
  thread_local std::vector<Cand> heap_storage;
  sym.resize(n);
  for (size_t i = 0; i < n; ++i) {
    sym[i] = {byte_id[static_cast<uint8_t>(word[i])], static_cast<int32_t>(i) - 1,
              i + 1 < n ? static_cast<int32_t>(i + 1) : -1};
  }
  heap_storage.clear();
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap(std::greater<Cand>(),
                                                                        std::move(heap_storage));
  auto consider = [&](int32_t pos) {
    const int32_t nx = sym[pos].next;
    if (nx < 0) return;
    auto it = merges.find(pair_key(sym[pos].id, sym[nx].id));
    if (it != merges.end()) heap.push({it->second.rank, pos, sym[pos].id, sym[nx].id});
  };
  for (size_t i = 0; i + 1 < n; ++i) consider(static_cast<int32_t>(i));
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    Sym& s = sym[c.pos];
    if (s.id != c.left || s.next < 0 || sym[s.next].id != c.right) continue;  // stale
    const int32_t gone = s.next;
    s.id = merges.find(pair_key(c.left, c.right))->second.id;
    s.next = sym[gone].next;
    if (s.next >= 0) sym[s.next].prev = c.pos;
    sym[gone].id = -1;
    if (s.prev >= 0) consider(s.prev);
    consider(c.pos);
  }
  for (int32_t p = 0; p >= 0; p = sym[p].next) out.push_back(sym[p].id);
}

void Tokenizer::Impl::encode_plain(std::string_view text, std::vector<int32_t>& out,
                                   bool use_cache) const {
  splitter->split(text, [&](std::string_view piece) {
    if (piece.size() == 1) {
      out.push_back(byte_id[static_cast<uint8_t>(piece[0])]);
      return;
    }
    if (use_cache && piece.size() <= kCacheMaxWordBytes) {
      // The cache is keyed by the raw piece bytes (ByteLevel is a bijection on bytes).
      thread_local std::string key;
      key.assign(piece);
      auto it = cache.find(key);
      if (it != cache.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
      const size_t before = out.size();
      bpe(piece, out);
      if (cache.size() >= kCacheMaxEntries) cache.clear();
      cache.emplace(key, std::vector<int32_t>(out.begin() + before, out.end()));
      return;
    }
    bpe(piece, out);
  });
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_file(const std::string& path, const TokenizerOptions& opt) {
  const std::string text = read_file(path);
  try {
    return from_json(text, opt);
  } catch (const dsa::Error& e) {
    throw dsa::Error(fmt::format("{}: {}", path, e.what()));
  }
}

Tokenizer Tokenizer::from_json(std::string_view json_text, const TokenizerOptions& opt) {
  using nlohmann::json;
  json j;
  try {
    j = parse_json(json_text);
  } catch (const dsa::Error& e) {
    DSA_FAIL("tokenizer.json is not valid JSON: {}", e.what());
  }
  auto impl = std::make_unique<Impl>();
  try {
    // Normalizer: none or an empty Sequence.
    const json& norm = j.value("normalizer", json());
    DSA_CHECK(norm.is_null() || (norm.value("type", "") == "Sequence" &&
                                 norm.value("normalizers", json::array()).empty()),
              "unsupported normalizer {}", norm.dump());
    // Pre-tokenizer: Sequence of Split(Regex, Isolated, invert=false), then ByteLevel without regex.
    const json& pre = j.at("pre_tokenizer");
    std::vector<json> steps;
    if (pre.at("type") == "Sequence") {
      for (const auto& s : pre.at("pretokenizers")) steps.push_back(s);
    } else {
      steps.push_back(pre);
    }
    DSA_CHECK(!steps.empty() && steps.back().at("type") == "ByteLevel",
              "unsupported pre_tokenizer: last step must be ByteLevel");
    const json& bl = steps.back();
    DSA_CHECK(!bl.value("add_prefix_space", false) && !bl.value("use_regex", true),
              "unsupported ByteLevel pre_tokenizer options {}", bl.dump());
    std::vector<std::string> patterns;
    for (size_t i = 0; i + 1 < steps.size(); ++i) {
      const json& s = steps[i];
      DSA_CHECK(s.at("type") == "Split" && s.at("behavior") == "Isolated" &&
                    !s.value("invert", false) && s.at("pattern").contains("Regex"),
                "unsupported pre_tokenizer step {}", s.dump());
      patterns.push_back(s.at("pattern").at("Regex").get<std::string>());
    }
    // The DeepSeek-V3 chain has a direct scanner; any other chain goes through PCRE2.
    if (!opt.regex_pre_tokenizer && DeepSeekV3Splitter::handles(patterns)) {
      impl->splitter = std::make_unique<DeepSeekV3Splitter>();
    } else {
      auto rx = std::make_unique<RegexSplitter>();
      for (const auto& p : patterns) rx->add_pattern(p);
      impl->splitter = std::move(rx);
      impl->regex_splitter = true;
    }
    // Model: BPE without byte fallback or subword affixes.
    const json& model = j.at("model");
    DSA_CHECK(model.at("type") == "BPE", "unsupported model type {}", model.at("type").dump());
    DSA_CHECK(!model.value("byte_fallback", false), "byte_fallback BPE is not supported");
    DSA_CHECK(model.value("continuing_subword_prefix", json()).is_null() &&
                  model.value("end_of_word_suffix", json()).is_null(),
              "BPE subword prefix/suffix not supported");
    int32_t max_id = -1;
    const json& vocab = model.at("vocab");
    for (auto it = vocab.begin(); it != vocab.end(); ++it) max_id = std::max(max_id, it.value().get<int32_t>());
    const json& added = j.value("added_tokens", json::array());
    for (const auto& a : added) max_id = std::max(max_id, a.at("id").get<int32_t>());
    DSA_CHECK(max_id >= 0 && max_id < (1 << 24), "bad token ids (max {})", max_id);
    impl->bytes_of.assign(max_id + 1, {});
    impl->special.assign(max_id + 1, 0);
    impl->defined.assign(max_id + 1, 0);
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const auto id = it.value().get<int32_t>();
      DSA_CHECK(id >= 0, "negative vocab id for {}", it.key());
      std::string raw;
      if (!byte_level_decode(it.key(), &raw)) raw = it.key();
      impl->bytes_of[id] = raw;
      impl->defined[id] = 1;
      impl->vocab[raw] = id;
    }
    for (int b = 0; b < 256; ++b) {
      auto it = impl->vocab.find(std::string(1, static_cast<char>(b)));
      DSA_CHECK(it != impl->vocab.end(), "vocab lacks the byte-level token for byte {}", b);
      impl->byte_id[b] = it->second;
    }
    int32_t rank = 0;
    for (const auto& m : model.at("merges")) {
      std::string a, b;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ');
        DSA_CHECK(sp != std::string::npos, "bad merge '{}'", s);
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else {
        a = m.at(0).get<std::string>();
        b = m.at(1).get<std::string>();
      }
      std::string ra, rb;
      DSA_CHECK(byte_level_decode(a, &ra) && byte_level_decode(b, &rb), "merge {} is not byte-level", m.dump());
      auto ia = impl->vocab.find(ra), ib = impl->vocab.find(rb), ic = impl->vocab.find(ra + rb);
      DSA_CHECK(ia != impl->vocab.end() && ib != impl->vocab.end() && ic != impl->vocab.end(),
                "merge {} refers to tokens outside the vocab", m.dump());
      impl->merges.try_emplace(pair_key(ia->second, ib->second), MergeInfo{rank, ic->second});
      ++rank;
    }
    for (const auto& a : added) {
      const auto id = a.at("id").get<int32_t>();
      const std::string content = a.at("content").get<std::string>();
      DSA_CHECK(!a.value("single_word", false) && !a.value("lstrip", false) && !a.value("rstrip", false),
                "added token {} uses single_word/lstrip/rstrip (unsupported)", content);
      std::string raw;
      if (!byte_level_decode(content, &raw)) raw = content;
      impl->bytes_of[id] = raw;
      impl->defined[id] = 1;
      const bool sp = a.value("special", false);
      impl->special[id] = sp;
      impl->added[content] = id;
      const bool normalized = a.value("normalized", !sp);
      (normalized ? impl->added_norm : impl->added_raw).add(content, id);
      if (!sp) (normalized ? impl->nonspecial_norm : impl->nonspecial_raw).add(content, id);
    }
  } catch (const nlohmann::json::exception& e) {
    DSA_FAIL("unexpected tokenizer.json structure: {}", e.what());
  }
  impl->cache.reserve(1 << 16);
  return Tokenizer(std::move(impl));
}

namespace {

// Added-token matches inside text[a, b): `raw` tokens first, then `norm` tokens in the gaps (HF's
// two passes); appended to hits in order.
void find_added(std::string_view text, size_t a, size_t b, const AddedTokenMatcher& raw,
                const AddedTokenMatcher& norm, std::vector<Hit>& hits) {
  const std::string_view seg = text.substr(a, b - a);
  auto norm_pass = [&](size_t from, size_t to) {
    const std::string_view gap = seg.substr(from, to - from);
    size_t pos = 0, start = 0, len = 0;
    int32_t id = -1;
    while (pos < gap.size() && norm.find(gap, pos, &start, &len, &id)) {
      hits.push_back({a + from + start, len, id});
      pos = start + len;
    }
  };
  size_t pos = 0, start = 0, len = 0;
  int32_t id = -1;
  while (pos < seg.size() && raw.find(seg, pos, &start, &len, &id)) {
    if (start > pos) norm_pass(pos, start);
    hits.push_back({a + start, len, id});
    pos = start + len;
  }
  if (pos < seg.size()) norm_pass(pos, seg.size());
}

}  // namespace

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool allow_special) const {
  const AddedTokenMatcher& raw = allow_special ? impl_->added_raw : impl_->nonspecial_raw;
  const AddedTokenMatcher& norm = allow_special ? impl_->added_norm : impl_->nonspecial_norm;
  const size_t bad = first_invalid_utf8(text);
  DSA_CHECK(bad == text.size(), "encode: input is not valid UTF-8 (byte offset {})", bad);
  std::vector<Hit> hits;
  find_added(text, 0, text.size(), raw, norm, hits);
  return impl_->encode_hits(text, hits);
}

std::vector<int32_t> Tokenizer::encode_marked(std::string_view text, std::span<const TextRange> plain) const {
  const size_t bad = first_invalid_utf8(text);
  DSA_CHECK(bad == text.size(), "encode: input is not valid UTF-8 (byte offset {})", bad);
  std::vector<Hit> hits;
  size_t seg = 0;
  for (const TextRange& r : plain) {
    DSA_CHECK(r.begin >= seg && r.begin <= r.end && r.end <= text.size(),
              "encode_marked: plain ranges must be sorted, disjoint and inside the text");
    find_added(text, seg, r.begin, impl_->added_raw, impl_->added_norm, hits);
    seg = r.end;
  }
  find_added(text, seg, text.size(), impl_->added_raw, impl_->added_norm, hits);
  return impl_->encode_hits(text, hits);
}

// Plain encoding between the added-token hits, the hits' ids in between.
std::vector<int32_t> Tokenizer::Impl::encode_hits(std::string_view text, std::span<const Hit> hits) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 8);
  // One shared word cache; a concurrent caller that finds it busy simply encodes without it.
  std::unique_lock<std::mutex> lock(cache_mu, std::try_to_lock);
  const bool use_cache = lock.owns_lock();
  size_t pos = 0;
  for (const Hit& h : hits) {
    if (h.pos > pos) encode_plain(text.substr(pos, h.pos - pos), out, use_cache);
    out.push_back(h.id);
    pos = h.pos + h.len;
  }
  if (pos < text.size()) encode_plain(text.substr(pos), out, use_cache);
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (!is_valid_id(id) || (skip_special && impl_->special[id])) continue;
    out += impl_->bytes_of[id];
  }
  return out;
}

std::string_view Tokenizer::token_bytes(int32_t id) const {
  return is_valid_id(id) ? std::string_view(impl_->bytes_of[id]) : std::string_view();
}

bool Tokenizer::is_valid_id(int32_t id) const {
  return id >= 0 && id < static_cast<int32_t>(impl_->defined.size()) && impl_->defined[id];
}

bool Tokenizer::is_special(int32_t id) const { return is_valid_id(id) && impl_->special[id]; }

int32_t Tokenizer::token_to_id(std::string_view bytes) const {
  auto it = impl_->added.find(std::string(bytes));
  if (it != impl_->added.end()) return it->second;
  auto jt = impl_->vocab.find(std::string(bytes));
  return jt == impl_->vocab.end() ? -1 : jt->second;
}

bool Tokenizer::uses_regex_pre_tokenizer() const { return impl_->regex_splitter; }

int32_t Tokenizer::id_limit() const { return static_cast<int32_t>(impl_->defined.size()); }

void Tokenizer::clear_cache() const {
  std::lock_guard<std::mutex> lock(impl_->cache_mu);
  impl_->cache.clear();
}

// ---------------------------------------------------------------- incremental decoding

std::string IncrementalDecoder::push(int32_t id) {
  if (!tok_->is_valid_id(id) || (skip_special_ && tok_->is_special(id))) return {};
  pending_ += tok_->token_bytes(id);
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const int n = utf8_sequence_length(std::string_view(pending_).substr(i));
    if (n < 0) break;  // incomplete character at the end: hold it back
    if (n == 0) {
      append_utf8(out, 0xFFFD);
      ++i;
      continue;
    }
    out.append(pending_, i, static_cast<size_t>(n));
    i += static_cast<size_t>(n);
  }
  pending_.erase(0, i);
  return out;
}

std::string IncrementalDecoder::flush() {
  std::string out;
  if (!pending_.empty()) append_utf8(out, 0xFFFD);
  pending_.clear();
  return out;
}

}  // namespace dsa::text
