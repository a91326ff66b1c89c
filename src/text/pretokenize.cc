// Added-token trie and PCRE2-based regex Split chain (behavior Isolated, invert false).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/pretokenize.h"

#include <pcre2.h>

#include "base/error.h"

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

// Oniguruma (used by HF tokenizers) gives \\s the Unicode White_Space property; PCRE2 10.42's \\s
// also matches U+180E. Rewrite \\s and \\S outside bracket classes to explicit White_Space sets.
static std::string rewrite_space_classes(const std::string& p) {
  static const std::string kWs =
      "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
      "\\x{202F}\\x{205F}\\x{3000}";
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char n = p[i + 1];
      if (!in_class && n == 's') {
        out += "[" + kWs + "]";
      } else if (!in_class && n == 'S') {
        out += "[^" + kWs + "]";
      } else {
        out += c;
        out += n;
      }
      ++i;
      continue;
    }
    if (c == '[') in_class = true;
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

void RegexSplitter::add_pattern(const std::string& pattern_in) {
  const std::string pattern = rewrite_space_classes(pattern_in);
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);
  DSA_CHECK(code != nullptr, "tokenizer regex {:?} does not compile at offset {}: {}", pattern, off,
            pcre2_message(err));
  codes_.push_back(code);
  jit_.push_back(pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0);
}

void RegexSplitter::split(std::string_view text,
                          const std::function<void(std::string_view)>& emit) const {
  if (text.empty()) return;
  split_level(0, text, emit);
}

void RegexSplitter::split_level(size_t level, std::string_view text,
                                const std::function<void(std::string_view)>& emit) const {
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
