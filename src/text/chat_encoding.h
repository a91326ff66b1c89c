// DeepSeek-V3.2 prompt encoding (spec §3.2–3.3): chat messages -> prompt text, byte-exact with the
// official encoding_dsv32.py; tokenize the result with Tokenizer::encode.
#pragma once
#include <string>

#include <vector>

#include "text/py_json.h"
#include "text/tokenizer.h"

namespace dsa::text {

inline constexpr const char* kBos = "<｜begin▁of▁sentence｜>";
inline constexpr const char* kEos = "<｜end▁of▁sentence｜>";
inline constexpr const char* kThinkStart = "<think>";
inline constexpr const char* kThinkEnd = "</think>";
inline constexpr const char* kDsml = "｜DSML｜";
inline constexpr const char* kUserTag = "<｜User｜>";
inline constexpr const char* kAssistantTag = "<｜Assistant｜>";

struct EncodeOptions {
  bool thinking = false;      // thinking_mode "thinking" (else "chat")
  bool drop_thinking = true;  // strip reasoning of assistant turns before the last user turn
  bool add_bos = true;
};

// A prompt: its text and the byte ranges that came from the messages (content, reasoning, tool
// names, arguments and results, tool schemas, response formats) rather than from the template.
// Tokenizer::encode_marked keeps those ranges plain text, so message text cannot produce a special
// token (no forged turns); only the template's own strings do.
struct RenderedPrompt {
  std::string text;
  std::vector<TextRange> plain;  // sorted, disjoint, non-empty
};

// messages: JSON array of OpenAI-style messages (roles system, user, developer, assistant, tool;
// fields content (a string, a list of text parts or null), reasoning_content|reasoning, tool_calls,
// tools, response_format). Throws dsa::Error with the message index on malformed input.
RenderedPrompt render_messages(const OrderedJson& messages, const EncodeOptions& opt);
// Just the text of render_messages (byte-exact with the official encoding_dsv32.py).
std::string encode_messages(const OrderedJson& messages, const EncodeOptions& opt);

// Attaches request-level tools (OpenAI list) to the first system/developer message, inserting a
// system message with empty content at the front if there is none (as vLLM does).
OrderedJson attach_tools(OrderedJson messages, const OrderedJson& tools);
// The same for a request-level response_format object (rendered as the template's block).
OrderedJson attach_response_format(OrderedJson messages, const OrderedJson& response_format);

// The tools block of a system/developer message (OpenAI tool list in, text out).
std::string render_tools(const OrderedJson& tools);

}  // namespace dsa::text
