// Chat format tests: our own hand-written V3.2 prompt case (text and ids), spec fragments and
// ids, Python JSON spacing, completion parsing (round trip through encode, strict errors),
// chat_input API.
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "base/error.h"
#include "text/chat_encoding.h"
#include "text/chat_input.h"
#include "text/completion_parser.h"
#include "text/py_json.h"
#include "text_test_common.h"

namespace dsa::text {
namespace {

const std::string kFix = DSA_SOURCE_DIR "/tests/fixtures/text/";

// Our own conversation (chat_case_input.json: a unit-conversion assistant with two tools) and its
// expected prompts, written by hand from the spec templates (shared/spec/chat-format.md §3.2-3.3):
// tools on the system message, reasoning of earlier turns dropped, DSML tool calls with string and
// non-string parameters, a batch of two tool results, a final user turn.
std::string read_expected(const std::string& name) {
  std::string s = testing::read_text_file(kFix + name);
  EXPECT_FALSE(s.empty()) << name;
  if (!s.empty() && s.back() == '\n') s.pop_back();  // the fixture files end with a newline
  return s;
}

// Expected ids of those prompts from HF `tokenizers` (tests/reference/text_chat_ids.py).
std::vector<int32_t> expected_ids(const std::string& mode) {
  std::istringstream in(testing::read_text_file(kFix + "chat_case_expected_ids.txt"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(mode + "\t", 0) != 0) continue;
    std::istringstream nums(line.substr(mode.size() + 1));
    std::vector<int32_t> ids;
    for (int32_t id; nums >> id;) ids.push_back(id);
    return ids;
  }
  ADD_FAILURE() << "no '" << mode << "' line in chat_case_expected_ids.txt";
  return {};
}

OrderedJson own_case_messages() {
  const auto in = OrderedJson::parse(testing::read_text_file(kFix + "chat_case_input.json"));
  return attach_tools(in["messages"], in["tools"]);
}

TEST(TextChat, OwnCasePrompts) {
  const OrderedJson msgs = own_case_messages();
  const std::string thinking = read_expected("chat_case_expected.txt");
  const std::string chat = read_expected("chat_case_expected_chat.txt");
  EXPECT_EQ(encode_messages(msgs, {.thinking = true}), thinking);
  EXPECT_EQ(encode_messages(msgs, {.thinking = false}), chat);
  // Same through the public API; ids must equal the HF tokenizers reference and decode back.
  DSA_REQUIRE_TOKENIZER(tok);
  const std::vector<std::pair<std::string, std::string>> cases = {{"thinking", thinking},
                                                                  {"chat", chat}};
  for (const auto& [mode, text] : cases) {
    const std::vector<int32_t> want = expected_ids(mode);
    ASSERT_FALSE(want.empty()) << mode;
    EXPECT_EQ(tok->encode(text), want) << mode;
    const auto ids = encode_messages_file(*tok, kFix + "chat_case_input.json", mode == "thinking");
    EXPECT_EQ(ids, want) << mode;
    EXPECT_EQ(tok->decode(ids), text) << mode;
  }
}

TEST(TextChat, OwnCaseKeptReasoningAfterLastUser) {
  // Without the final user turn the first user message is the last one: the reasoning of both later
  // assistant turns is kept and the tool results are followed by "\n\n<think>". Expected text
  // derived by hand from the thinking fixture.
  OrderedJson msgs = own_case_messages();
  msgs.erase(msgs.size() - 1);
  std::string want = read_expected("chat_case_expected.txt");
  const auto replace_once = [&want](const std::string& from, const std::string& to) {
    const size_t pos = want.find(from);
    ASSERT_NE(pos, std::string::npos) << from;
    ASSERT_EQ(want.find(from, pos + 1), std::string::npos) << from;
    want.replace(pos, from.size(), to);
  };
  replace_once("<｜User｜>Thanks! And 5 km in miles?<｜Assistant｜><think>", "");
  replace_once("<｜Assistant｜></think>\n\n<｜DSML｜function_calls>",
               "<｜Assistant｜><think>Two kinds of conversion: distances and a temperature.\n"
               "One convert_length call with both distances, one convert_temperature call for "
               "451 °F.</think>\n\n<｜DSML｜function_calls>");
  replace_once(
      "</function_results>\n\n</think>",
      "</function_results>\n\n<think>Round to one decimal: 42.2 km, 21.1 km, 232.8 °C.</think>");
  EXPECT_EQ(encode_messages(msgs, {.thinking = true}), want);
  // Chat mode never emits reasoning: the same text as the chat fixture without the final user turn.
  std::string chat = read_expected("chat_case_expected_chat.txt");
  chat.erase(chat.rfind("<｜User｜>"));
  EXPECT_EQ(encode_messages(msgs, {.thinking = false}), chat);
}

TEST(TextChat, SpecReadmeExample) {
  const OrderedJson msgs = OrderedJson::parse(R"([
    {"role": "user", "content": "hello"},
    {"role": "assistant", "content": "Hello! I am DeepSeek."},
    {"role": "user", "content": "1+1=?"}])");
  EXPECT_EQ(encode_messages(msgs, {.thinking = true}),
            "<｜begin▁of▁sentence｜><｜User｜>hello<｜Assistant｜></think>Hello! I am DeepSeek."
            "<｜end▁of▁sentence｜><｜User｜>1+1=?<｜Assistant｜><think>");
  EXPECT_EQ(encode_messages(msgs, {.thinking = false}),
            "<｜begin▁of▁sentence｜><｜User｜>hello<｜Assistant｜></think>Hello! I am DeepSeek."
            "<｜end▁of▁sentence｜><｜User｜>1+1=?<｜Assistant｜></think>");
  DSA_REQUIRE_TOKENIZER(tok);
  const auto ids = tok->encode(encode_messages(msgs, {.thinking = true}));
  EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.begin() + 3), (std::vector<int32_t>{0, 128803, 33310}));
  EXPECT_EQ(ids.back(), 128798);
  EXPECT_EQ(encode_prompt(*tok, "hello", false),
            (std::vector<int32_t>{0, 128803, 33310, 128804, 128799}));
}

TEST(TextChat, DeveloperRoleAndResponseFormat) {
  const OrderedJson msgs = OrderedJson::parse(R"([
    {"role": "system", "content": "S", "response_format": {"type": "json_schema", "x": [1, 2.5, true, null]}},
    {"role": "developer", "content": "Q", "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}])");
  const std::string p = encode_messages(msgs, {.thinking = true});
  const std::string rf = "S\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n"
                         "{\"type\": \"json_schema\", \"x\": [1, 2.5, true, null]}";
  EXPECT_EQ(p.substr(0, std::string(kBos).size() + rf.size()), std::string(kBos) + rf);
  EXPECT_NE(p.find("<｜User｜>\n\n## Tools\n\n"), std::string::npos);
  EXPECT_NE(p.find("<functions>\n{\"name\": \"f\", \"parameters\": {}}\n</functions>\n\n\n# The user's message is: Q"
                   "<｜Assistant｜><think>"),
            std::string::npos);
}

TEST(TextChat, ToolResultsAndErrors) {
  auto msgs = OrderedJson::parse(R"([
    {"role": "user", "content": "q"},
    {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "f",
       "arguments": {"a": "x", "n": 3, "l": [1, "é"], "o": {"k": 1.0}}}}]},
    {"role": "tool", "content": "R"}])");
  EXPECT_EQ(encode_messages(msgs, {.thinking = false}),
            "<｜begin▁of▁sentence｜><｜User｜>q<｜Assistant｜></think>\n\n<｜DSML｜function_calls>\n"
            "<｜DSML｜invoke name=\"f\">\n"
            "<｜DSML｜parameter name=\"a\" string=\"true\">x</｜DSML｜parameter>\n"
            "<｜DSML｜parameter name=\"n\" string=\"false\">3</｜DSML｜parameter>\n"
            "<｜DSML｜parameter name=\"l\" string=\"false\">[1, \"é\"]</｜DSML｜parameter>\n"
            "<｜DSML｜parameter name=\"o\" string=\"false\">{\"k\": 1.0}</｜DSML｜parameter>\n"
            "</｜DSML｜invoke>\n</｜DSML｜function_calls><｜end▁of▁sentence｜>"
            "\n\n<function_results>\n<result>R</result>\n</function_results>\n\n</think>");
  // Thinking mode: the continuation after tool results opens a thinking block.
  EXPECT_NE(encode_messages(msgs, {.thinking = true}).find("</function_results>\n\n<think>"), std::string::npos);
  // More results than calls, orphan results, unknown roles, bad arguments: errors.
  auto extra = msgs;
  extra.push_back({{"role", "tool"}, {"content", "R2"}});
  EXPECT_THROW(encode_messages(extra, {}), dsa::Error);
  EXPECT_THROW(encode_messages(OrderedJson::parse(R"([{"role": "tool", "content": "x"}])"), {}), dsa::Error);
  EXPECT_THROW(encode_messages(OrderedJson::parse(R"([{"role": "robot", "content": "x"}])"), {}), dsa::Error);
  EXPECT_THROW(encode_messages(OrderedJson::parse(R"({"role": "user"})"), {}), dsa::Error);
  auto bad_args = msgs;
  bad_args[1]["tool_calls"][0]["function"]["arguments"] = "{not json";
  EXPECT_THROW(encode_messages(bad_args, {}), dsa::Error);
  // Thinking mode: an assistant turn after the last user needs reasoning or tool calls.
  EXPECT_THROW(encode_messages(OrderedJson::parse(R"([{"role": "user", "content": "q"},
                                                      {"role": "assistant", "content": "a"}])"),
                               {.thinking = true}),
               dsa::Error);
}

TEST(TextChat, PythonJsonDumps) {
  EXPECT_EQ(py_json_dumps(OrderedJson::parse(R"({"b": 1, "a": [1.5, -2, 1e20, 1e-7, 0.0001, 100.0, 12345678901234567.0]})")),
            "{\"b\": 1, \"a\": [1.5, -2, 1e+20, 1e-07, 0.0001, 100.0, 1.2345678901234568e+16]}");
  EXPECT_EQ(py_json_quote("a\"b\\c\n\t\x01é😀\x7f"), "\"a\\\"b\\\\c\\n\\t\\u0001é😀\x7f\"");
  EXPECT_EQ(py_float_repr(0.1), "0.1");
  EXPECT_EQ(py_float_repr(1e16), "1e+16");
  EXPECT_EQ(py_float_repr(9999999999999998.0), "9999999999999998.0");
}

// Builds the completion the model would have generated for the last assistant message.
std::string completion_of(const OrderedJson& msgs, bool thinking) {
  OrderedJson prefix = msgs;
  prefix.erase(prefix.size() - 1);
  const std::string full = encode_messages(msgs, {.thinking = thinking});
  const std::string prompt = encode_messages(prefix, {.thinking = thinking});
  EXPECT_EQ(full.substr(0, prompt.size()), prompt);
  return full.substr(prompt.size());
}

TEST(TextChat, ParseRoundTripsEncodedAssistantMessages) {
  const OrderedJson msgs = OrderedJson::parse(R"([
    {"role": "user", "content": "weather?"},
    {"role": "assistant", "reasoning_content": "Need tools.\nTwo calls.", "content": "Let me check.",
     "tool_calls": [
       {"type": "function", "function": {"name": "get_weather", "arguments": "{\"location\": \"Zürich\", \"days\": 3, \"opts\": {\"unit\": \"C\", \"x\": [1, 2]}, \"flag\": false}"}},
       {"type": "function", "function": {"name": "noop", "arguments": "{}"}}]}])");
  for (bool thinking : {true, false}) {
    const std::string text = completion_of(msgs, thinking);
    const ParsedCompletion r = parse_completion(text, thinking);
    ASSERT_TRUE(r.ok) << r.error << "\n" << text;
    EXPECT_EQ(r.reasoning_content, thinking ? "Need tools.\nTwo calls." : "");
    EXPECT_EQ(r.content, "Let me check.");
    ASSERT_EQ(r.tool_calls.size(), 2u);
    EXPECT_EQ(r.tool_calls[0].name, "get_weather");
    EXPECT_EQ(r.tool_calls[0].arguments, msgs[1]["tool_calls"][0]["function"]["arguments"].get<std::string>());
    EXPECT_EQ(r.tool_calls[1].name, "noop");
    EXPECT_EQ(r.tool_calls[1].arguments, "{}");
    const OrderedJson m = r.to_message();
    EXPECT_EQ(m["tool_calls"][0]["type"], "function");
    EXPECT_EQ(m["role"], "assistant");
  }
  // Plain answers, with and without the closing EOS.
  auto r = parse_completion("Reasoning here</think>The answer is 2.<｜end▁of▁sentence｜>", true);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.reasoning_content, "Reasoning here");
  EXPECT_EQ(r.content, "The answer is 2.");
  EXPECT_TRUE(r.tool_calls.empty());
  EXPECT_TRUE(parse_completion("Hi<｜end▁of▁sentence｜>", false).ok);
}

TEST(TextChat, MalformedCompletionsAreErrors) {
  const std::string good_call =
      "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n"
      "<｜DSML｜parameter name=\"a\" string=\"true\">x</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
      "</｜DSML｜function_calls><｜end▁of▁sentence｜>";
  ASSERT_TRUE(parse_completion(good_call, false).ok) << parse_completion(good_call, false).error;
  const std::vector<std::pair<std::string, bool>> bad = {
      {"no closing think", true},
      {"r" + good_call, true},  // tool calls before </think>
      {"a<｜end▁of▁sentence｜>trailing", false},
      {"a <think> b<｜end▁of▁sentence｜>", false},
      {"x</think>y</think>z", true},
      {"｜DSML｜ in content", false},
      {"\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n", false},  // truncated
      {"\n\n<｜DSML｜function_calls>", false},
      {"\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke nam=\"f\">\n</｜DSML｜invoke>\n</｜DSML｜function_calls>", false},
      {"\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"maybe\">x"
       "</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls>", false},
      {"\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"true\">x"
       "</｜DSML｜parameter>\n<｜DSML｜parameter name=\"a\" string=\"true\">y</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
       "</｜DSML｜function_calls>", false},  // duplicate parameter
      {"\n\n<｜DSML｜function_calls> \n<｜DSML｜invoke name=\"f\">\n</｜DSML｜invoke>\n</｜DSML｜function_calls>", false},
      {good_call + "x", false},
      {std::string(good_call).insert(good_call.size() - std::string(kEos).size(), "junk"), false},
  };
  for (const auto& [text, thinking] : bad) {
    const ParsedCompletion r = parse_completion(text, thinking);
    EXPECT_FALSE(r.ok) << text;
    EXPECT_FALSE(r.error.empty()) << text;
    EXPECT_TRUE(r.tool_calls.empty());
  }
}

TEST(TextChat, TokenizerPathResolution) {
  setenv("DSA_TOKENIZER", "/nonexistent/tok.json", 1);
  EXPECT_THROW(default_tokenizer_path(), dsa::Error);
  unsetenv("DSA_TOKENIZER");
  if (testing::shared_tokenizer() != nullptr) {
    EXPECT_EQ(default_tokenizer_path(), DSA_SOURCE_DIR "/third_party/tokenizer/tokenizer.json");
  }
}

}  // namespace
}  // namespace dsa::text
