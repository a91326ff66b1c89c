// Pre-tokenization pieces of the BPE tokenizer: added-token matcher (leftmost-longest trie) and a
// chain of PCRE2 (JIT) Split(Isolated) regexes, each re-splitting the pieces of the previous one.
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

// Compiled regex chain. Thread-safe: match scratch is per thread.
class RegexSplitter {
 public:
  RegexSplitter() = default;
  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;
  ~RegexSplitter();
  // Compiles a pattern in HF/Oniguruma syntax (UTF + Unicode properties); throws dsa::Error.
  void add_pattern(const std::string& pattern);
  size_t size() const { return codes_.size(); }
  // Calls emit(piece) for each final piece of valid UTF-8 text, in order.
  void split(std::string_view text, const std::function<void(std::string_view)>& emit) const;

 private:
  void split_level(size_t level, std::string_view text,
                   const std::function<void(std::string_view)>& emit) const;
  std::vector<void*> codes_;  // pcre2_code_8*
  std::vector<bool> jit_;
};

}  // namespace dsa::text
