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
// As the official parser: a message without tool calls must end with the end-of-sentence token
// (after tool calls it may be left out); the invoke header admits Python's Unicode whitespace
// before name=. Stricter than the official parser (never more lenient): a text that ends right
// after the "\n\n<｜DSML｜function_calls" marker, or inside the block, is an error (the official
// one accepts the first with no tool calls).
ParsedCompletion parse_completion(std::string_view text, bool thinking);

}  // namespace dsa::text
