// Direct scanner for the DeepSeek-V3 Split chain. Each level re-splits the pieces of the previous
// one (behavior Isolated: matches and the gaps between them are both pieces); level 3 tries the
// alternatives in the regex's order at each position, with the regex's backtracking worked out:
//   A  [ASCII punct][A-Za-z]+
//   B  [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
//   C  ' '?[\p{P}\p{S}]+[\r\n]*
//   D  \s*[\r\n]+   (ends after the last CR/LF of the whitespace run)
//   E  \s+(?!\S)    (the run, minus its last character unless the piece ends there)
//   F  \s+
#include "text/split_v3.h"

#include <array>
#include <cstdint>
#include <map>

#include "base/error.h"
#include "text/unicode_data.h"

namespace dsa::text {

namespace {

const char* const kPatterns[3] = {
    "\\p{N}{1,3}",
    "[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
    " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"};

// Per-code-point flags.
enum : uint8_t {
  kN = 1,       // \p{N}
  kL = 2,       // \p{L}
  kM = 4,       // \p{M}
  kPS = 8,      // \p{P} or \p{S}
  kWS = 16,     // \s (White_Space)
  kCRLF = 32,   // \r or \n
  kCJK = 64,    // level 2's ranges
  kAPunct = 128 // ASCII punctuation of alternative A
};

uint8_t flags_of(char32_t cp) {
  const uint32_t set = 1u << unicode::category(cp);
  uint8_t f = 0;
  if (set & unicode::kNumber) f |= kN;
  if (set & unicode::kLetter) f |= kL;
  if (set & unicode::kMark) f |= kM;
  if (set & (unicode::kPunct | unicode::kSymbol)) f |= kPS;
  if (unicode::is_white_space(cp)) f |= kWS;
  if (cp == '\r' || cp == '\n') f |= kCRLF;
  if ((cp >= 0x4E00 && cp <= 0x9FA5) || (cp >= 0x3040 && cp <= 0x30FF)) f |= kCJK;
  if (cp < 0x80 && std::string_view("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~").find(char(cp)) != std::string_view::npos)
    f |= kAPunct;
  return f;
}

// Two-stage flag table (blocks of 256 code points, identical blocks shared).
struct FlagTable {
  std::array<uint16_t, 0x110000 / 256> stage1{};
  std::vector<uint8_t> stage2;
  FlagTable() {
    std::map<std::string, uint16_t> seen;
    std::string block(256, '\0');
    for (size_t b = 0; b < stage1.size(); ++b) {
      for (size_t i = 0; i < 256; ++i) block[i] = static_cast<char>(flags_of(char32_t(b * 256 + i)));
      auto [it, fresh] = seen.emplace(block, static_cast<uint16_t>(seen.size()));
      if (fresh) stage2.insert(stage2.end(), block.begin(), block.end());
      stage1[b] = it->second;
    }
  }
  uint8_t operator()(char32_t cp) const { return stage2[size_t(stage1[cp >> 8]) * 256 + (cp & 0xFF)]; }
};

const FlagTable& flag_table() {
  static const FlagTable t;
  return t;
}

// The text as code points: flags and byte offsets (off[n] = text size).
struct Decoded {
  std::vector<uint8_t> fl;
  std::vector<uint32_t> off;
  std::string_view text;
  bool is_space(size_t i) const { return text[off[i]] == ' '; }
  bool is_ascii_letter(size_t i) const { return static_cast<uint8_t>(text[off[i]]) < 0x80 && (fl[i] & kL); }
};

// End of the level-3 match at i (< e), or i if no alternative matches.
size_t match3(const Decoded& d, size_t i, size_t e) {
  const auto& fl = d.fl;
  const uint8_t c = fl[i];
  if ((c & kAPunct) && i + 1 < e && d.is_ascii_letter(i + 1)) {  // A
    size_t j = i + 2;
    while (j < e && d.is_ascii_letter(j)) ++j;
    return j;
  }
  const auto lm = [&](size_t k) { return k < e && (fl[k] & (kL | kM)); };
  if (!(c & (kCRLF | kL | kPS)) && lm(i + 1)) {  // B with its optional first character
    size_t j = i + 2;
    while (lm(j)) ++j;
    return j;
  }
  if (c & (kL | kM)) {  // B without it
    size_t j = i + 1;
    while (lm(j)) ++j;
    return j;
  }
  size_t s = i;
  if (d.is_space(i) && i + 1 < e && (fl[i + 1] & kPS)) s = i + 1;  // C
  if (fl[s] & kPS) {
    size_t j = s + 1;
    while (j < e && (fl[j] & kPS)) ++j;
    while (j < e && (fl[j] & kCRLF)) ++j;
    return j;
  }
  if (c & kWS) {
    size_t run = i + 1;
    while (run < e && (fl[run] & kWS)) ++run;
    for (size_t k = run; k-- > i;)  // D
      if (fl[k] & kCRLF) return k + 1;
    if (run == e) return run;      // E at the end of the piece
    if (run - i >= 2) return run - 1;  // E, leaving the last space to the next word
    return run;                    // F
  }
  return i;
}

template <class Emit>
void level3(const Decoded& d, size_t a, size_t e, Emit& emit) {
  size_t gap = a;
  for (size_t i = a; i < e;) {
    const size_t m = match3(d, i, e);
    if (m == i) {
      ++i;
      continue;
    }
    if (gap < i) emit(gap, i);
    emit(i, m);
    gap = i = m;
  }
  if (gap < e) emit(gap, e);
}

template <class Emit>
void level2(const Decoded& d, size_t a, size_t e, Emit& emit) {
  size_t gap = a;
  for (size_t i = a; i < e;) {
    if (!(d.fl[i] & kCJK)) {
      ++i;
      continue;
    }
    size_t j = i + 1;
    while (j < e && (d.fl[j] & kCJK)) ++j;
    if (gap < i) level3(d, gap, i, emit);
    level3(d, i, j, emit);
    gap = i = j;
  }
  if (gap < e) level3(d, gap, e, emit);
}

}  // namespace

bool DeepSeekV3Splitter::handles(const std::vector<std::string>& patterns) {
  return patterns.size() == 3 && patterns[0] == kPatterns[0] && patterns[1] == kPatterns[1] &&
         patterns[2] == kPatterns[2];
}

void DeepSeekV3Splitter::split(std::string_view text, const PieceFn& emit) const {
  if (text.empty()) return;
  DSA_CHECK(text.size() < (size_t(1) << 32), "tokenizer: a text piece of {} bytes is too long", text.size());
  const FlagTable& table = flag_table();
  thread_local Decoded d;
  d.text = text;
  d.fl.clear();
  d.off.clear();
  for (size_t i = 0; i < text.size();) {  // valid UTF-8 (checked by Tokenizer::encode)
    const auto b0 = static_cast<uint8_t>(text[i]);
    d.off.push_back(static_cast<uint32_t>(i));
    char32_t cp;
    if (b0 < 0x80) {
      cp = b0;
      i += 1;
    } else if (b0 < 0xE0) {
      cp = (char32_t(b0 & 0x1F) << 6) | (text[i + 1] & 0x3F);
      i += 2;
    } else if (b0 < 0xF0) {
      cp = (char32_t(b0 & 0x0F) << 12) | (char32_t(text[i + 1] & 0x3F) << 6) | (text[i + 2] & 0x3F);
      i += 3;
    } else {
      cp = (char32_t(b0 & 0x07) << 18) | (char32_t(text[i + 1] & 0x3F) << 12) |
           (char32_t(text[i + 2] & 0x3F) << 6) | (text[i + 3] & 0x3F);
      i += 4;
    }
    d.fl.push_back(table(cp));
  }
  const size_t n = d.fl.size();
  d.off.push_back(static_cast<uint32_t>(text.size()));
  auto out = [&](size_t a, size_t b) { emit(text.substr(d.off[a], d.off[b] - d.off[a])); };
  // Level 1: runs of \p{N} cut into pieces of up to three, from the left.
  size_t gap = 0;
  for (size_t i = 0; i < n;) {
    if (!(d.fl[i] & kN)) {
      ++i;
      continue;
    }
    size_t j = i + 1;
    while (j < n && j - i < 3 && (d.fl[j] & kN)) ++j;
    if (gap < i) level2(d, gap, i, out);
    level2(d, i, j, out);
    gap = i = j;
  }
  if (gap < n) level2(d, gap, n, out);
}

}  // namespace dsa::text
