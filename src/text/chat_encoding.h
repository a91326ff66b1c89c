// DeepSeek-V3.2 prompt encoding (spec §3.2–3.3): chat messages -> prompt text, byte-exact with the
// official encoding_dsv32.py; tokenize the result with Tokenizer::encode.
#pragma once
#include <string>

#include "text/py_json.h"

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

// messages: JSON array of OpenAI-style messages (roles system, user, developer, assistant, tool;
// fields content, reasoning_content|reasoning, tool_calls, tools, response_format). Throws
// dsa::Error with the message index on malformed input.
std::string encode_messages(const OrderedJson& messages, const EncodeOptions& opt);

// Attaches request-level tools (OpenAI list) to the first system/developer message, inserting a
// system message with empty content at the front if there is none (as vLLM does).
OrderedJson attach_tools(OrderedJson messages, const OrderedJson& tools);

// The tools block of a system/developer message (OpenAI tool list in, text out).
std::string render_tools(const OrderedJson& tools);

}  // namespace dsa::text
