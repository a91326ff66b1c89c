// Parses generated V3.2 text (special tokens kept) into an assistant message: reasoning, content
// and DSML tool calls, with the strict rules of spec §3.4. Never throws; errors come back as values.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "text/py_json.h"

namespace dsa::text {

struct ParsedToolCall {
  std::string name;
  std::string arguments;  // JSON object text, Python json.dumps spacing
};

struct ParsedCompletion {
  bool ok = false;
  std::string error;  // set when !ok: what was wrong and at which byte offset
  std::string content;
  std::string reasoning_content;
  std::vector<ParsedToolCall> tool_calls;

  // {"role": "assistant", "content", "reasoning_content", "tool_calls": [{"type": "function",
  // "function": {"name", "arguments"}}]} (only meaningful when ok).
  OrderedJson to_message() const;
};

// text: the model output after the prompt's trailing <think> / </think>. thinking: the prompt was
// built in thinking mode (the text starts with reasoning closed by </think>).
// Differences from the official parser (stricter, never more lenient): a text that ends inside
// a function_calls block (no closing tag) is an error rather than accepted.
ParsedCompletion parse_completion(std::string_view text, bool thinking);

}  // namespace dsa::text
