// Tokenizer tests: spec §3.5 golden vectors, special tokens, decode, incremental decoding, errors.
#include <string>
#include <vector>

#include "base/error.h"
#include "text/utf8.h"
#include "text_test_common.h"

namespace dsa::text {
namespace {

using Ids = std::vector<int32_t>;

TEST(TextTokenizer, SpecGoldenVectors) {
  DSA_REQUIRE_TOKENIZER(tok);
  const std::vector<std::pair<std::string, Ids>> cases = {
      {"Hello! 毕老师！1 + 1 = 2 ĠÑĤÐ²ÑĬÑĢ",
       {19923, 3, 223, 5464, 5008, 1175, 19, 940, 223, 19, 438, 223, 20, 6113, 257, 76589, 131, 100,
        76032, 1628, 76589, 131, 108, 76589, 131, 98}},
      {"hello", {33310}},
      {"Hello! I am DeepSeek.", {19923, 3, 342, 1030, 22651, 4374, 1465, 16}},
      {" 1234567", {223, 6895, 18009, 25}},
      {"1+1=?", {19, 13, 19, 127252}},
      {"\n\n<function_results>", {271, 30, 8701, 80757, 32}},
      {"don't  stop\r\n", {20385, 1664, 223, 6409, 204, 201}},
      {"日本語のテキスト", {88768, 1576, 17383, 20367, 24552}},
      {"", {}},
  };
  for (const auto& [text, ids] : cases) {
    EXPECT_EQ(tok->encode(text), ids) << text;
    EXPECT_EQ(tok->decode(ids), text);
  }
}

TEST(TextTokenizer, SpecialTokenIds) {
  DSA_REQUIRE_TOKENIZER(tok);
  EXPECT_EQ(tok->token_to_id("<｜begin▁of▁sentence｜>"), 0);
  EXPECT_EQ(tok->token_to_id("<｜end▁of▁sentence｜>"), 1);
  EXPECT_EQ(tok->token_to_id("<｜▁pad▁｜>"), 2);
  EXPECT_EQ(tok->token_to_id("<｜User｜>"), 128803);
  EXPECT_EQ(tok->token_to_id("<｜Assistant｜>"), 128804);
  EXPECT_EQ(tok->token_to_id("<think>"), 128798);
  EXPECT_EQ(tok->token_to_id("</think>"), 128799);
  EXPECT_EQ(tok->token_to_id("｜DSML｜"), 128793);
  EXPECT_TRUE(tok->is_special(0));
  EXPECT_TRUE(tok->is_special(128793));
  EXPECT_FALSE(tok->is_special(128798));
  EXPECT_EQ(tok->encode("<｜begin▁of▁sentence｜><｜User｜>hello<｜Assistant｜></think>Hello! I am DeepSeek."
                        "<｜end▁of▁sentence｜><｜User｜>1+1=?<｜Assistant｜><think>"),
            (Ids{0, 128803, 33310, 128804, 128799, 19923, 3, 342, 1030, 22651, 4374, 1465, 16, 1, 128803,
                 19, 13, 19, 127252, 128804, 128798}));
  EXPECT_EQ(tok->encode("<｜DSML｜function_calls>"), (Ids{30, 128793, 8701, 4941, 12548, 32}));
  // allow_special=false: special tokens become text, non-special added tokens are still matched.
  const Ids plain = tok->encode("<｜end▁of▁sentence｜><think>", false);
  EXPECT_NE(plain.front(), 1);
  EXPECT_EQ(plain.back(), 128798);
  EXPECT_EQ(tok->decode(plain), "<｜end▁of▁sentence｜><think>");
}

TEST(TextTokenizer, DecodeSkipsSpecialAndUnknown) {
  DSA_REQUIRE_TOKENIZER(tok);
  const Ids ids = {0, 33310, 1, 128793, 999999, -5, 128900};
  EXPECT_EQ(tok->decode(ids), "<｜begin▁of▁sentence｜>hello<｜end▁of▁sentence｜>｜DSML｜");
  EXPECT_EQ(tok->decode(ids, /*skip_special=*/true), "hello");
  EXPECT_FALSE(tok->is_valid_id(128900));
  EXPECT_TRUE(tok->is_valid_id(128814));
}

TEST(TextTokenizer, WhitespaceDigitsAndLookahead) {
  DSA_REQUIRE_TOKENIZER(tok);
  for (const std::string s : {"a   b", "a \t\n  b  ", "x\r\n\r\n  y", "12345678901234567890",
                              "   ", "\n", "  x", "x  ", "١٢٣٤٥", "a\u00a0\u00a0b"}) {
    EXPECT_EQ(tok->decode(tok->encode(s)), s);
  }
  // "\s+(?!\S)" leaves the last space to the next word: "a   b" -> "a", "  ", " b".
  EXPECT_EQ(tok->encode("a   b").size(), 3u);
}

TEST(TextTokenizer, InvalidUtf8IsAnError) {
  DSA_REQUIRE_TOKENIZER(tok);
  EXPECT_THROW(tok->encode(std::string("ab\xff", 3)), dsa::Error);
  EXPECT_THROW(tok->encode(std::string("\xe6\x97", 2)), dsa::Error);
  EXPECT_THROW(tok->encode(std::string("\xed\xa0\x80", 3)), dsa::Error);  // surrogate
}

TEST(TextTokenizer, BadFilesGiveClearErrors) {
  EXPECT_THROW(Tokenizer::from_file("/nonexistent/tokenizer.json"), dsa::Error);
  EXPECT_THROW(Tokenizer::from_json("{not json"), dsa::Error);
  EXPECT_THROW(Tokenizer::from_json(R"({"model": {"type": "Unigram"}})"), dsa::Error);
  try {
    Tokenizer::from_json(R"({"pre_tokenizer": {"type": "Whitespace"}, "model": {}})");
    FAIL() << "expected an error";
  } catch (const dsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("ByteLevel"), std::string::npos) << e.what();
  }
}

TEST(TextTokenizer, IncrementalDecoderNeverSplitsCharacters) {
  DSA_REQUIRE_TOKENIZER(tok);
  const std::string text = "Hi 👩🏽‍💻 毕老师！ĠÑĤ 🇯🇵 naïve\n<think>ok</think>";
  const Ids ids = tok->encode(text);
  IncrementalDecoder dec(*tok);
  std::string out;
  for (int32_t id : ids) {
    const std::string piece = dec.push(id);
    EXPECT_TRUE(is_valid_utf8(piece));
    out += piece;
  }
  out += dec.flush();
  EXPECT_EQ(out, text);
  // Pieces of one 3-byte character come out only when it is complete.
  IncrementalDecoder d2(*tok);
  const std::string ch = "毕";
  const Ids single = tok->encode("\xe6\xaf\x95");  // 毕 as one piece
  std::string got;
  for (int32_t id : single) got += d2.push(id);
  got += d2.flush();
  EXPECT_EQ(got, ch);
  // A dangling lead byte becomes U+FFFD at flush; an invalid byte becomes U+FFFD at once.
  IncrementalDecoder d3(*tok);
  const int32_t lead = tok->token_to_id(std::string(1, '\xe6'));
  ASSERT_GE(lead, 0);
  EXPECT_EQ(d3.push(lead), "");
  EXPECT_EQ(d3.pending(), 1u);
  EXPECT_EQ(d3.flush(), "\xef\xbf\xbd");
  const int32_t ff = tok->token_to_id(std::string(1, '\xff'));
  ASSERT_GE(ff, 0);
  EXPECT_EQ(d3.push(ff), "\xef\xbf\xbd");
}

}  // namespace
}  // namespace dsa::text
