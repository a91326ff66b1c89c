// Strict parser for DeepSeek-V3.2 completions: reasoning, content, DSML function calls.
#include "text/completion_parser.h"

#include <initializer_list>
#include <set>

#include "text/chat_encoding.h"

namespace dsa::text {

namespace {

const std::string kCallsStart = "\n\n<｜DSML｜function_calls";
const std::string kCallsEnd = "</｜DSML｜function_calls>";
const std::string kInvoke = "<｜DSML｜invoke";
const std::string kInvokeEnd = "</｜DSML｜invoke";
const std::string kParam = "<｜DSML｜parameter";
const std::string kParamEnd = "/｜DSML｜parameter";

struct ParseError {
  std::string msg;
};

// Reads from pos to the earliest of the stops (first listed wins a tie). Returns the text before
// it; *stop is the stop found or "" when none (then the rest of the text is returned).
std::string_view read_until(std::string_view text, size_t& pos, std::initializer_list<std::string_view> stops,
                            std::string_view* stop) {
  size_t best = std::string_view::npos;
  *stop = {};
  for (std::string_view s : stops) {
    const size_t p = text.find(s, pos);
    if (p != std::string_view::npos && (best == std::string_view::npos || p < best)) {
      best = p;
      *stop = s;
    }
  }
  const size_t start = pos;
  if (best == std::string_view::npos) {
    pos = text.size();
    return text.substr(start);
  }
  pos = best + stop->size();
  return text.substr(start, best - start);
}

[[noreturn]] void fail(const std::string& what, size_t at) {
  throw ParseError{what + " (at byte " + std::to_string(at) + ")"};
}

// Byte length of the character at s[i] if Python's `\s` (str.isspace) matches it, else 0.
size_t py_space_len(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return i + k < s.size() ? static_cast<uint8_t>(s[i + k]) : 0; };
  const uint8_t c = b(0);
  if ((c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20)) return 1;
  if (c == 0xC2 && (b(1) == 0x85 || b(1) == 0xA0)) return 2;                       // U+0085, U+00A0
  if (c == 0xE1 && b(1) == 0x9A && b(2) == 0x80) return 3;                          // U+1680
  if (c == 0xE2 && b(1) == 0x80 && (b(2) <= 0x8A || b(2) == 0xA8 || b(2) == 0xA9 || b(2) == 0xAF))
    return 3;                                                                       // U+2000-200A, 2028, 2029, 202F
  if (c == 0xE2 && b(1) == 0x81 && b(2) == 0x9F) return 3;                          // U+205F
  if (c == 0xE3 && b(1) == 0x80 && b(2) == 0x80) return 3;                          // U+3000
  return 0;
}

// Python's `X$` without MULTILINE: X at the very end, or X followed by one final "\n".
bool ends_with_dollar(std::string_view s, std::string_view x, size_t* x_at) {
  if (s.size() >= x.size() && s.substr(s.size() - x.size()) == x) {
    *x_at = s.size() - x.size();
    return true;
  }
  if (s.size() >= x.size() + 1 && s.back() == '\n' && s.substr(s.size() - x.size() - 1, x.size()) == x) {
    *x_at = s.size() - x.size() - 1;
    return true;
  }
  return false;
}

// `^\s*name="(.*?)">\n$` (DOTALL, Unicode \s as Python's re): the invoke header. Whitespace cannot
// start "name=", so \s* ends where the whitespace does.
bool match_invoke_header(std::string_view s, std::string* name) {
  size_t i = 0;
  for (size_t n; (n = py_space_len(s, i)) > 0;) i += n;
  std::string_view rest = s.substr(i);
  if (rest.substr(0, 6) != "name=\"") return false;
  rest.remove_prefix(6);
  // Lazy name: the shortest name whose `">\n` is followed by the end (or a final "\n").
  for (size_t p = rest.find("\">\n"); p != std::string_view::npos; p = rest.find("\">\n", p + 1)) {
    const size_t tail = rest.size() - (p + 3);
    if (tail == 0 || (tail == 1 && rest.back() == '\n')) {
      *name = std::string(rest.substr(0, p));
      return true;
    }
  }
  return false;
}

// `^ name="(.*?)" string="(true|false)">(.*?)<$` (DOTALL): one parameter.
bool match_param(std::string_view s, std::string* name, bool* is_str, std::string* value) {
  if (s.substr(0, 7) != " name=\"") return false;
  std::string_view rest = s.substr(7);
  size_t lt_at = 0;
  if (!ends_with_dollar(rest, "<", &lt_at)) return false;
  for (size_t p = rest.find("\" string=\""); p != std::string_view::npos; p = rest.find("\" string=\"", p + 1)) {
    const std::string_view after = rest.substr(p + 10);
    for (std::string_view flag : {std::string_view("true\">"), std::string_view("false\">")}) {
      if (after.substr(0, flag.size()) != flag) continue;
      const size_t v0 = p + 10 + flag.size();
      // The value is lazy up to a '<' that ends the text (or precedes a final "\n").
      size_t v1 = std::string_view::npos;
      for (size_t q = rest.find('<', v0); q != std::string_view::npos; q = rest.find('<', q + 1)) {
        const size_t tail = rest.size() - (q + 1);
        if (tail == 0 || (tail == 1 && rest.back() == '\n')) {
          v1 = q;
          break;
        }
      }
      if (v1 == std::string_view::npos) continue;
      *name = std::string(rest.substr(0, p));
      *is_str = flag[0] == 't';
      *value = std::string(rest.substr(v0, v1 - v0));
      return true;
    }
  }
  return false;
}

void parse_tool_calls(std::string_view text, size_t& pos, std::vector<ParsedToolCall>& calls) {
  std::string_view stop;
  for (;;) {
    const size_t at = pos;
    std::string_view between = read_until(text, pos, {kInvoke, kCallsEnd}, &stop);
    if (stop.empty()) fail("unterminated function_calls block (no " + kCallsEnd + ")", at);
    if (between != ">\n") fail("expected \">\\n\" before " + std::string(stop), at);
    if (stop == kCallsEnd) return;

    const size_t head_at = pos;
    std::string_view header = read_until(text, pos, {kParam, kInvokeEnd}, &stop);
    if (stop.empty()) fail("unterminated invoke", head_at);
    ParsedToolCall call;
    if (!match_invoke_header(header, &call.name)) fail("malformed invoke header", head_at);
    std::set<std::string> seen;
    std::string args = "{";
    while (stop == kParam) {
      const size_t p_at = pos;
      std::string_view body = read_until(text, pos, {kParamEnd}, &stop);
      if (stop.empty()) fail("unterminated parameter", p_at);
      std::string name, value;
      bool is_str = false;
      if (!match_param(body, &name, &is_str, &value)) fail("malformed parameter", p_at);
      if (!seen.insert(name).second) fail("duplicate parameter name \"" + name + "\"", p_at);
      if (args.size() > 1) args += ", ";
      args += py_json_quote(name) + ": " + (is_str ? py_json_quote(value) : value);
      const size_t t_at = pos;
      std::string_view tail = read_until(text, pos, {kParam, kInvokeEnd}, &stop);
      if (stop.empty()) fail("unterminated invoke", t_at);
      if (tail != ">\n") fail("expected \">\\n\" after a parameter", t_at);
    }
    call.arguments = args + "}";
    calls.push_back(std::move(call));
  }
}

}  // namespace

ParsedCompletion parse_completion(std::string_view text, bool thinking) {
  ParsedCompletion r;
  try {
    size_t pos = 0;
    std::string_view stop;
    if (thinking) {
      r.reasoning_content = std::string(read_until(text, pos, {kThinkEnd, kCallsStart}, &stop));
      if (stop != kThinkEnd) fail("thinking mode: reasoning is not closed by </think>", pos);
    }
    r.content = std::string(read_until(text, pos, {kEos, kCallsStart}, &stop));
    if (stop.empty()) fail("the message is not closed by the end-of-sentence token", pos);
    if (stop == kCallsStart) {
      parse_tool_calls(text, pos, r.tool_calls);
      const size_t at = pos;
      std::string_view rest = read_until(text, pos, {kEos}, &stop);
      if (!rest.empty()) fail("unexpected text after the function_calls block", at);
    }
    if (pos != text.size()) fail("unexpected text after the end of sentence token", pos);
    for (const char* sp : {kBos, kEos, kThinkStart, kThinkEnd, kDsml}) {
      if (r.content.find(sp) != std::string::npos) fail(std::string("special token ") + sp + " inside content", 0);
      if (r.reasoning_content.find(sp) != std::string::npos) {
        fail(std::string("special token ") + sp + " inside reasoning", 0);
      }
    }
    r.ok = true;
  } catch (const ParseError& e) {
    r = ParsedCompletion{};
    r.error = e.msg;
  }
  return r;
}

OrderedJson ParsedCompletion::to_message() const {
  OrderedJson calls = OrderedJson::array();
  for (const auto& c : tool_calls) {
    calls.push_back({{"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
  }
  return {{"role", "assistant"},
          {"content", content},
          {"reasoning_content", reasoning_content},
          {"tool_calls", calls}};
}

}  // namespace dsa::text
