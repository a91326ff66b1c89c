// Two-stage General_Category table built once from the generated ranges of unicode_data.inc.
#include "text/unicode_data.h"

#include <array>
#include <map>
#include <string>

namespace dsa::text::unicode {

namespace {

struct Range {
  char32_t first, last;
  uint8_t cat;
};

constexpr Range kRanges[] = {
#include "text/unicode_data.inc"
};

constexpr size_t kBlock = 256;
constexpr size_t kBlocks = 0x110000 / kBlock;

// stage1[cp / 256] = index of a 256-entry block in stage2 (identical blocks shared).
struct Table {
  std::array<uint16_t, kBlocks> stage1{};
  std::vector<uint8_t> stage2;
  Table() {
    std::vector<uint8_t> flat(0x110000, kCn);
    for (const Range& r : kRanges)
      for (char32_t c = r.first; c <= r.last; ++c) flat[c] = r.cat;
    std::map<std::string, uint16_t> seen;
    for (size_t b = 0; b < kBlocks; ++b) {
      std::string key(reinterpret_cast<const char*>(&flat[b * kBlock]), kBlock);
      auto [it, fresh] = seen.emplace(key, static_cast<uint16_t>(seen.size()));
      if (fresh) stage2.insert(stage2.end(), key.begin(), key.end());
      stage1[b] = it->second;
    }
  }
};

const Table& table() {
  static const Table t;
  return t;
}

}  // namespace

Category category(char32_t cp) {
  if (cp > 0x10FFFF) return kCn;
  const Table& t = table();
  return static_cast<Category>(t.stage2[size_t(t.stage1[cp / kBlock]) * kBlock + cp % kBlock]);
}

uint32_t category_set(std::string_view name) {
  static const char* const kNames[kNumCategories] = {
      "Cn", "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps",
      "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co"};
  if (name == "Any") return (1u << kNumCategories) - 1;
  if (name == "L&" || name == "LC") return bit(kLu) | bit(kLl) | bit(kLt);
  uint32_t set = 0;
  for (int c = 0; c < kNumCategories; ++c) {
    const std::string_view n = kNames[c];
    if (name.size() == 1 ? n[0] == name[0] : n == name) set |= 1u << c;
  }
  return set;
}

bool is_white_space(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

std::vector<std::pair<char32_t, char32_t>> ranges_of(uint32_t set) {
  std::vector<std::pair<char32_t, char32_t>> out;
  auto add = [&](char32_t a, char32_t b) {
    if (!out.empty() && out.back().second + 1 == a) {
      out.back().second = b;
    } else {
      out.emplace_back(a, b);
    }
  };
  if (set & bit(kCn)) {  // unlisted code points: the gaps between the ranges
    char32_t next = 0;
    for (const Range& r : kRanges) {
      if (r.first > next) add(next, r.first - 1);
      if (set & (1u << r.cat)) add(r.first, r.last);
      next = r.last + 1;
    }
    if (next <= 0x10FFFF) add(next, 0x10FFFF);
    return out;
  }
  for (const Range& r : kRanges)
    if (set & (1u << r.cat)) add(r.first, r.last);
  return out;
}

}  // namespace dsa::text::unicode
