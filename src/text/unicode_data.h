// Unicode General_Category of every code point at the Unicode version of HF `tokenizers` (16.0.0;
// generated table unicode_data.inc, from the pinned PyPI package unicodedata2) and category sets.
#pragma once
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

namespace dsa::text::unicode {

inline constexpr const char* kVersion = "16.0.0";

// Index order of gen_unicode_data.py's CATEGORIES.
enum Category : uint8_t {
  kCn, kLu, kLl, kLt, kLm, kLo, kMn, kMc, kMe, kNd, kNl, kNo, kPc, kPd, kPs,
  kPe, kPi, kPf, kPo, kSm, kSc, kSk, kSo, kZs, kZl, kZp, kCc, kCf, kCs, kCo, kNumCategories
};

// Bit sets of categories.
inline constexpr uint32_t bit(Category c) { return 1u << c; }
inline constexpr uint32_t kLetter = bit(kLu) | bit(kLl) | bit(kLt) | bit(kLm) | bit(kLo);
inline constexpr uint32_t kMark = bit(kMn) | bit(kMc) | bit(kMe);
inline constexpr uint32_t kNumber = bit(kNd) | bit(kNl) | bit(kNo);
inline constexpr uint32_t kPunct = bit(kPc) | bit(kPd) | bit(kPs) | bit(kPe) | bit(kPi) | bit(kPf) | bit(kPo);
inline constexpr uint32_t kSymbol = bit(kSm) | bit(kSc) | bit(kSk) | bit(kSo);

// General_Category of a code point (kCn past U+10FFFF).
Category category(char32_t cp);

// The set named by a regex property: one- or two-letter category ("L", "Lu", "N", ...), "Any" or
// "L&"/"LC". Returns 0 for names it does not know.
uint32_t category_set(std::string_view name);

// Unicode White_Space (what Oniguruma's \s matches): stable since Unicode 6.3.
bool is_white_space(char32_t cp);

// Sorted, merged [first, last] ranges of the code points whose category is in `set`.
std::vector<std::pair<char32_t, char32_t>> ranges_of(uint32_t set);

}  // namespace dsa::text::unicode
