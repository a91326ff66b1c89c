// Pre-tokenization pieces of the BPE tokenizer: added-token matcher (leftmost-longest trie), the
// piece-splitter interface, and the general one: a chain of PCRE2 (JIT) Split(Isolated) regexes, each
// re-splitting the pieces of the previous one, with Unicode classes taken from unicode_data.h.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace dsa::text {

// Byte trie over added-token strings; finds the leftmost, then longest, match.
class AddedTokenMatcher {
 public:
  void add(std::string_view s, int32_t id);
  bool empty() const { return terminal_.size() <= 1 && children_.empty(); }
  // Finds the leftmost-longest match in text[from..]; returns false if none.
  bool find(std::string_view text, size_t from, size_t* start, size_t* len, int32_t* id) const;

 private:
  int32_t child(int32_t node, uint8_t b) const;
  std::unordered_map<uint64_t, int32_t> children_;  // (node << 8 | byte) -> node
  std::vector<int32_t> terminal_{-1};                // node -> token id or -1
  bool first_byte_[256] = {};
};

using PieceFn = std::function<void(std::string_view)>;

// Splits text into pre-tokenizer pieces. Implementations are thread-safe.
class PieceSplitter {
 public:
  virtual ~PieceSplitter() = default;
  // Calls emit(piece) for each final piece of valid UTF-8 text, in order.
  virtual void split(std::string_view text, const PieceFn& emit) const = 0;
};

// Compiled regex chain. Thread-safe: match scratch is per thread.
class RegexSplitter final : public PieceSplitter {
 public:
  RegexSplitter() = default;
  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;
  ~RegexSplitter();
  // Compiles a pattern in HF/Oniguruma syntax; throws dsa::Error. \p{..}, \P{..}, \s, \S, \d, \D,
  // \w, \W become explicit code point sets at unicode::kVersion (PCRE2's own tables are older);
  // other Unicode-dependent escapes (\b, \B, \X, \R, \h, \v, \N) are refused.
  void add_pattern(const std::string& pattern);
  size_t size() const { return codes_.size(); }
  void split(std::string_view text, const PieceFn& emit) const override;

 private:
  void split_level(size_t level, std::string_view text, const PieceFn& emit) const;
  std::vector<void*> codes_;  // pcre2_code_8*
  std::vector<bool> jit_;
};

// The pattern with its Unicode classes spelled out as code point ranges (see add_pattern).
std::string expand_unicode_classes(const std::string& pattern);

}  // namespace dsa::text
