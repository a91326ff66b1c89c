// The DeepSeek-V3 pre-tokenizer chain (spec chat-format.md §3.5: digits in threes, CJK/kana runs,
// then the word/punctuation/whitespace alternation) as a direct scanner over Unicode 16 classes:
// the same pieces as HF `tokenizers`, without a regex engine.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "text/pretokenize.h"

namespace dsa::text {

class DeepSeekV3Splitter final : public PieceSplitter {
 public:
  // True if `patterns` (the Split regexes of tokenizer.json, in order) are exactly the three this
  // class implements.
  static bool handles(const std::vector<std::string>& patterns);
  void split(std::string_view text, const PieceFn& emit) const override;
};

}  // namespace dsa::text
