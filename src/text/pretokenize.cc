// Added-token trie and PCRE2-based regex Split chain (behavior Isolated, invert false) with the
// pattern's Unicode classes expanded to code point ranges of unicode_data.h.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/pretokenize.h"

#include <pcre2.h>

#include "base/error.h"
#include "text/unicode_data.h"

namespace dsa::text {

// ---------------------------------------------------------------- added tokens

int32_t AddedTokenMatcher::child(int32_t node, uint8_t b) const {
  auto it = children_.find((static_cast<uint64_t>(node) << 8) | b);
  return it == children_.end() ? -1 : it->second;
}

void AddedTokenMatcher::add(std::string_view s, int32_t id) {
  DSA_CHECK(!s.empty(), "added token {} has empty content", id);
  int32_t node = 0;
  first_byte_[static_cast<uint8_t>(s[0])] = true;
  for (char c : s) {
    const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(c);
    auto it = children_.find(key);
    if (it == children_.end()) {
      const auto next = static_cast<int32_t>(terminal_.size());
      terminal_.push_back(-1);
      children_.emplace(key, next);
      node = next;
    } else {
      node = it->second;
    }
  }
  terminal_[node] = id;
}

bool AddedTokenMatcher::find(std::string_view text, size_t from, size_t* start, size_t* len,
                             int32_t* id) const {
  for (size_t i = from; i < text.size(); ++i) {
    if (!first_byte_[static_cast<uint8_t>(text[i])]) continue;
    int32_t node = 0, best_id = -1;
    size_t best_len = 0;
    for (size_t j = i; j < text.size(); ++j) {
      node = child(node, static_cast<uint8_t>(text[j]));
      if (node < 0) break;
      if (terminal_[node] >= 0) {
        best_id = terminal_[node];
        best_len = j - i + 1;
      }
    }
    if (best_id >= 0) {
      *start = i;
      *len = best_len;
      *id = best_id;
      return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------- regex chain

namespace {

// Per-thread PCRE2 scratch: match data and a JIT stack big enough for long pieces.
struct MatchScratch {
  pcre2_match_data* md = nullptr;
  pcre2_match_context* mctx = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchScratch() {
    md = pcre2_match_data_create(4, nullptr);
    mctx = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, nullptr);
    if (mctx && stack) pcre2_jit_stack_assign(mctx, nullptr, stack);
  }
  ~MatchScratch() {
    pcre2_match_data_free(md);
    pcre2_match_context_free(mctx);
    pcre2_jit_stack_free(stack);
  }
};

MatchScratch& scratch() {
  thread_local MatchScratch s;
  return s;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof buf);
  return std::string(reinterpret_cast<const char*>(buf));
}

}  // namespace

RegexSplitter::~RegexSplitter() {
  for (void* c : codes_) pcre2_code_free(static_cast<pcre2_code*>(c));
}

namespace {

std::string hex_ranges(const std::vector<std::pair<char32_t, char32_t>>& ranges) {
  std::string out;
  for (const auto& [a, b] : ranges) {
    out += fmt::format("\\x{{{:X}}}", static_cast<uint32_t>(a));
    if (b != a) out += fmt::format("-\\x{{{:X}}}", static_cast<uint32_t>(b));
  }
  return out;
}

// The set of a shorthand or property escape as class-body ranges; *negated for \S \D \W \P{..}.
bool escape_set(const std::string& p, size_t i, size_t* consumed, std::string* set, bool* negated) {
  const char n = p[i + 1];
  *consumed = 2;
  *negated = n == 'S' || n == 'D' || n == 'W' || n == 'P';
  uint32_t cats = 0;
  switch (n) {
    case 's':
    case 'S':
      *set = "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
             "\\x{202F}\\x{205F}\\x{3000}";
      return true;
    case 'd':
    case 'D': cats = unicode::bit(unicode::kNd); break;
    case 'w':
    case 'W':  // Oniguruma's \w: Letter, Mark, Decimal_Number, Connector_Punctuation
      cats = unicode::kLetter | unicode::kMark | unicode::bit(unicode::kNd) | unicode::bit(unicode::kPc);
      break;
    case 'p':
    case 'P': {
      std::string name;
      if (i + 2 < p.size() && p[i + 2] == '{') {
        const size_t close = p.find('}', i + 3);
        DSA_CHECK(close != std::string::npos, "tokenizer regex: unterminated \\{} at offset {}", n, i);
        name = p.substr(i + 3, close - i - 3);
        *consumed = close + 1 - i;
      } else {
        DSA_CHECK(i + 2 < p.size(), "tokenizer regex: \\{} without a property name", n);
        name = p.substr(i + 2, 1);
        *consumed = 3;
      }
      if (!name.empty() && name[0] == '^') {
        *negated = !*negated;
        name.erase(0, 1);
      }
      cats = unicode::category_set(name);
      DSA_CHECK(cats != 0, "tokenizer regex: unsupported Unicode property \\{}{{{}}}", n, name);
      break;
    }
    case 'b': case 'B': case 'X': case 'R': case 'h': case 'H': case 'v': case 'V': case 'N':
      DSA_FAIL("tokenizer regex: \\{} is not supported (its meaning depends on Unicode tables)", n);
    default:
      return false;
  }
  *set = hex_ranges(unicode::ranges_of(cats));
  return true;
}

}  // namespace

// HF tokenizers matches with Oniguruma at Unicode 16; PCRE2 10.42 knows Unicode 14 (and its \s
// also matches U+180E). Every Unicode class is therefore spelled out from unicode_data.h.
std::string expand_unicode_classes(const std::string& p) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      size_t consumed = 0;
      std::string set;
      bool negated = false;
      if (!escape_set(p, i, &consumed, &set, &negated)) {
        out.append(p, i, 2);
        ++i;
        continue;
      }
      if (in_class) {
        DSA_CHECK(!negated, "tokenizer regex: a negated class escape inside [...] is not supported (offset {})", i);
        out += set;
      } else {
        out += (negated ? "[^" : "[") + set + "]";
      }
      i += consumed - 1;
      continue;
    }
    out += c;
    if (!in_class && c == '[') {
      in_class = true;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];  // a leading ']' is literal
    } else if (in_class && c == ']') {
      in_class = false;
    }
  }
  return out;
}

void RegexSplitter::add_pattern(const std::string& pattern_in) {
  const std::string pattern = expand_unicode_classes(pattern_in);
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF, &err, &off, nullptr);
  DSA_CHECK(code != nullptr, "tokenizer regex {:?} does not compile at offset {}: {}", pattern, off,
            pcre2_message(err));
  codes_.push_back(code);
  jit_.push_back(pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0);
}

void RegexSplitter::split(std::string_view text, const PieceFn& emit) const {
  if (text.empty()) return;
  split_level(0, text, emit);
}

void RegexSplitter::split_level(size_t level, std::string_view text, const PieceFn& emit) const {
  if (level == codes_.size()) {
    emit(text);
    return;
  }
  auto* code = static_cast<pcre2_code*>(codes_[level]);
  MatchScratch& s = scratch();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0, gap_start = 0;
  while (pos <= text.size()) {
    const int rc = jit_[level]
        ? pcre2_jit_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, s.md, s.mctx)
        : pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, s.md, s.mctx);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    DSA_CHECK(rc >= 0, "tokenizer regex match failed: {}", pcre2_message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.md);
    const size_t ms = ov[0], me = ov[1];
    if (me == ms) {  // empty match: nothing to isolate; step over one character
      if (ms >= text.size()) break;
      size_t step = 1;
      while (ms + step < text.size() && (static_cast<uint8_t>(text[ms + step]) & 0xC0) == 0x80) ++step;
      pos = ms + step;
      continue;
    }
    if (ms > gap_start) split_level(level + 1, text.substr(gap_start, ms - gap_start), emit);
    split_level(level + 1, text.substr(ms, me - ms), emit);
    gap_start = pos = me;
  }
  if (gap_start < text.size()) split_level(level + 1, text.substr(gap_start), emit);
}

}  // namespace dsa::text
