// Byte-level BPE tokenizer loading a Hugging Face tokenizer.json of the DeepSeek-V3 family:
// added tokens matched first, then regex Split pre-tokenizers (PCRE2 JIT), ByteLevel, BPE merges.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dsa::text {

// Byte range [begin, end) of a text.
struct TextRange {
  size_t begin = 0, end = 0;
};

struct TokenizerOptions {
  // Split with the PCRE2 chain even where the direct DeepSeek-V3 scanner applies (tests compare them).
  bool regex_pre_tokenizer = false;
};

class Tokenizer {
 public:
  // Loads tokenizer.json; throws dsa::Error with a clear message on unreadable or unsupported files.
  static Tokenizer from_file(const std::string& path, const TokenizerOptions& opt = {});
  static Tokenizer from_json(std::string_view json_text, const TokenizerOptions& opt = {});

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Encodes UTF-8 text (throws dsa::Error on invalid UTF-8). Added tokens in the text are matched
  // as in HF `tokenizers`; with allow_special=false tokens flagged special are treated as plain text
  // (HF's encode_special_tokens), non-special added tokens (e.g. <｜User｜>) are still matched.
  std::vector<int32_t> encode(std::string_view text, bool allow_special = true) const;

  // Encodes text in which no added token (special or not) is matched inside the `plain` ranges
  // (sorted, disjoint): their bytes are ordinary text, even a string like <｜User｜>. Everything
  // outside them is matched as encode() does, and the text between two added tokens is
  // pre-tokenized as one, across range boundaries, so the ids equal encode(text) whenever no
  // added-token string lies inside or across a plain range. Throws dsa::Error on bad ranges.
  std::vector<int32_t> encode_marked(std::string_view text, std::span<const TextRange> plain) const;

  // Concatenated bytes of the tokens (may be invalid UTF-8 if the ids cut a character).
  // Unknown ids are skipped like HF does; skip_special drops tokens flagged special.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // Raw bytes of one token ("" for unknown ids).
  std::string_view token_bytes(int32_t id) const;
  bool is_valid_id(int32_t id) const;
  bool is_special(int32_t id) const;
  // Id of an added token or of a vocab token given by its raw bytes; -1 if none.
  int32_t token_to_id(std::string_view bytes) const;
  // Whether pieces come from the PCRE2 regex chain (else the direct DeepSeek-V3 scanner).
  bool uses_regex_pre_tokenizer() const;
  // One past the largest defined id.
  int32_t id_limit() const;

  // Word-cache statistics (for benchmarks) and clearing.
  void clear_cache() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Streaming detokenizer: feed ids one at a time, get text that never ends inside a UTF-8
// character. Bytes that can never form a valid character come out as U+FFFD.
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tok, bool skip_special = false)
      : tok_(&tok), skip_special_(skip_special) {}
  // Returns the newly completed text (possibly empty).
  std::string push(int32_t id);
  // Returns what is left (an incomplete trailing character becomes U+FFFD) and resets.
  std::string flush();
  // Number of bytes held back waiting for the rest of a character.
  size_t pending() const { return pending_.size(); }

 private:
  const Tokenizer* tok_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace dsa::text
