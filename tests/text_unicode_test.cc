// Unicode 16 in the pre-tokenizer: the category table, agreement with HF `tokenizers` per code point
// of every Unicode version (unicode_cp_expected.txt.xz, tests/reference/text_make_unicode.py) on
// both splitters (direct DeepSeek-V3 scanner and the PCRE2 chain with expanded classes), and the
// regex class expansion's errors.
#include <chrono>
#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "base/error.h"
#include "text/pretokenize.h"
#include "text/unicode_data.h"
#include "text/utf8.h"
#include "text_test_common.h"

namespace dsa::text {
namespace {

const std::string kFix = DSA_SOURCE_DIR "/tests/fixtures/text/";

TEST(TextUnicode, CategoryTable) {
  using namespace unicode;
  EXPECT_STREQ(kVersion, "16.0.0");
  EXPECT_EQ(category('A'), kLu);
  EXPECT_EQ(category('a'), kLl);
  EXPECT_EQ(category('1'), kNd);
  EXPECT_EQ(category(' '), kZs);
  EXPECT_EQ(category(0x0301), kMn);
  EXPECT_EQ(category(0x6BD5), kLo);      // 毕
  EXPECT_EQ(category(0x1FA77), kSo);     // 🩷 pink heart (Unicode 15.0)
  EXPECT_EQ(category(0x1FAE9), kSo);     // face with bags under eyes (Unicode 16.0)
  EXPECT_EQ(category(0x0897), kMn);      // ARABIC PEPPER (Unicode 16.0)
  EXPECT_EQ(category(0x088F), kCn);      // Unicode 17.0: not known to HF's Unicode 16 either
  EXPECT_EQ(category(0xE000), kCo);
  EXPECT_EQ(category(0xD800), kCs);
  EXPECT_EQ(category(0x10FFFF), kCn);
  EXPECT_EQ(category(0x110000), kCn);
  EXPECT_EQ(category_set("L"), kLetter);
  EXPECT_EQ(category_set("Lu"), bit(kLu));
  EXPECT_EQ(category_set("Xx"), 0u);
  const auto nd = ranges_of(bit(kNd));
  ASSERT_FALSE(nd.empty());
  EXPECT_EQ(nd.front(), (std::pair<char32_t, char32_t>('0', '9')));
  EXPECT_TRUE(is_white_space(0x3000));
  EXPECT_FALSE(is_white_space(0x180E));  // Mongolian vowel separator: not White_Space since 6.3
}

TEST(TextUnicode, IssueExamples) {
  DSA_REQUIRE_TOKENIZER(tok);
  // Unicode 15 emoji: one piece with the space, as HF (issue 20: dsa with PCRE2 10.42 split it).
  EXPECT_EQ(tok->encode("I love you 🩷"), (std::vector<int32_t>{43, 3518, 440, 7351, 105, 118}));
}

struct CpCase {
  char32_t cp;
  std::string bucket;
  uint32_t hash;
};

std::vector<CpCase> load_cp_cases(std::vector<std::string>* contexts) {
  const std::string data = testing::read_command("xz -dc '" + kFix + "unicode_cp_expected.txt.xz'");
  std::vector<CpCase> out;
  std::istringstream in(data);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    if (line[0] == '#') {  // "# ...; contexts: a | b | ..." with \n and \t escaped
      const std::string key = "contexts: ";
      std::string rest = line.substr(line.find(key) + key.size());
      for (size_t p; (p = rest.find("\\n")) != std::string::npos;) rest.replace(p, 2, "\n");
      for (size_t p; (p = rest.find("\\t")) != std::string::npos;) rest.replace(p, 2, "\t");
      for (size_t p = 0;;) {
        const size_t q = rest.find(" | ", p);
        contexts->push_back(rest.substr(p, q == std::string::npos ? std::string::npos : q - p));
        if (q == std::string::npos) break;
        p = q + 3;
      }
      continue;
    }
    std::istringstream ls(line);
    std::string cp, bucket, hash;
    ls >> cp >> bucket >> hash;
    out.push_back({static_cast<char32_t>(std::stoul(cp, nullptr, 16)), bucket,
                   static_cast<uint32_t>(std::stoul(hash, nullptr, 16))});
  }
  return out;
}

uint32_t fnv1a32(const std::vector<int32_t>& ids) {
  uint32_t h = 0x811C9DC5u;
  for (int32_t id : ids) {
    const auto u = static_cast<uint32_t>(id);
    for (int k = 0; k < 4; ++k) h = (h ^ ((u >> (8 * k)) & 0xFF)) * 0x01000193u;
  }
  return h;
}

// stride > 1: every code point of Unicode 15.0 and later, every stride-th one of the older buckets.
void check_code_points(const Tokenizer& tok, const char* label, size_t stride = 1) {
  std::vector<std::string> contexts;
  const std::vector<CpCase> cases = load_cp_cases(&contexts);
  ASSERT_GT(cases.size(), 150000u) << "unicode_cp_expected.txt.xz missing or short (xz-utils installed?)";
  ASSERT_GE(contexts.size(), 8u);
  std::map<std::string, std::pair<size_t, size_t>> by_bucket;  // bucket -> (agree, total)
  size_t shown = 0;
  const auto t0 = std::chrono::steady_clock::now();
  size_t k = 0, checked = 0;
  for (const CpCase& c : cases) {
    const bool old = c.bucket == "3.2" || c.bucket == "14.0" || c.bucket == "private" || c.bucket == "unassigned";
    if (old && k++ % stride != 0) continue;
    ++checked;
    std::string ch;
    append_utf8(ch, c.cp);
    std::vector<int32_t> ids;
    for (const std::string& ctx : contexts) {
      std::string s = ctx;
      for (size_t p; (p = s.find("{c}")) != std::string::npos;) s.replace(p, 3, ch);
      const auto e = tok.encode(s);
      ids.insert(ids.end(), e.begin(), e.end());
      ids.push_back(-1);
    }
    const bool ok = fnv1a32(ids) == c.hash;
    auto& [agree, total] = by_bucket[c.bucket];
    agree += ok;
    ++total;
    if (!ok && shown++ < 10) ADD_FAILURE() << label << ": U+" << std::hex << uint32_t(c.cp) << " (" << c.bucket
                                           << ") tokenizes differently from HF";
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::string summary;
  for (const auto& [b, n] : by_bucket) {
    summary += fmt::format(" {}:{}/{}", b, n.first, n.second);
    EXPECT_EQ(n.first, n.second) << label << ": Unicode bucket " << b;
  }
  std::printf("[unicode %s] %zu code points x %zu contexts in %.1f s, agree per bucket:%s\n", label, checked,
              contexts.size(), s, summary.c_str());
  for (const char* b : {"3.2", "14.0", "15.0", "15.1", "16.0", "17.0"}) EXPECT_GT(by_bucket[b].second, 0u) << b;
}

TEST(TextUnicode, EveryCodePointMatchesHf) {
  DSA_REQUIRE_TOKENIZER(tok);
  ASSERT_FALSE(tok->uses_regex_pre_tokenizer());
  check_code_points(*tok, "scanner");
}

TEST(TextUnicode, EveryCodePointMatchesHfThroughPcre2) {
  DSA_REQUIRE_TOKENIZER(shared);
  (void)shared;
  const Tokenizer tok = Tokenizer::from_file(DSA_SOURCE_DIR "/third_party/tokenizer/tokenizer.json",
                                             {.regex_pre_tokenizer = true});
  ASSERT_TRUE(tok.uses_regex_pre_tokenizer());
  check_code_points(tok, "pcre2", 4);
}

TEST(TextUnicode, RegexClassExpansion) {
  const std::string l = expand_unicode_classes("\\p{L}");
  EXPECT_EQ(l.substr(0, 20), "[\\x{41}-\\x{5A}\\x{61}");
  EXPECT_EQ(expand_unicode_classes("[^\\r\\n\\p{Nd}]"),
            "[^\\r\\n" + expand_unicode_classes("\\p{Nd}").substr(1, expand_unicode_classes("\\p{Nd}").size() - 2) +
                "]");
  EXPECT_EQ(expand_unicode_classes("\\S+").substr(0, 3), "[^\\");
  EXPECT_EQ(expand_unicode_classes("a\\.b\\x{41}"), "a\\.b\\x{41}");
  EXPECT_EQ(expand_unicode_classes("[]\\p{N}]").substr(0, 2), "[]");  // a leading ']' is literal
  EXPECT_THROW(expand_unicode_classes("\\bword"), dsa::Error);
  EXPECT_THROW(expand_unicode_classes("[\\P{L}x]"), dsa::Error);
  EXPECT_THROW(expand_unicode_classes("\\p{Greek}"), dsa::Error);
  EXPECT_THROW(expand_unicode_classes("\\p{L"), dsa::Error);
  // A chain built from expanded patterns splits like the originals would at Unicode 16.
  RegexSplitter rx;
  rx.add_pattern("\\p{N}{1,3}");
  std::vector<std::string> pieces;
  rx.split("a12345\u0661\u0662", [&](std::string_view p) { pieces.emplace_back(p); });
  EXPECT_EQ(pieces, (std::vector<std::string>{"a", "123", "45\u0661", "\u0662"}));
}

}  // namespace
}  // namespace dsa::text
