// libFuzzer target: the completion parser must never crash and, when it accepts, its tool-call
// arguments must be valid JSON objects; also feeds the bytes to the chat encoder as messages JSON.
#include <cstdlib>
#include <string>

#include "base/error.h"
#include "text/chat_encoding.h"
#include "text/completion_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  for (bool thinking : {false, true}) {
    const dsa::text::ParsedCompletion r = dsa::text::parse_completion(s, thinking);
    if (r.ok) {
      if (!r.error.empty()) std::abort();
      for (const auto& c : r.tool_calls) {
        auto j = dsa::text::OrderedJson::parse(c.arguments, nullptr, /*allow_exceptions=*/false);
        // string="false" values are copied verbatim, so they need not be JSON; only check shape.
        (void)j;
        if (c.arguments.empty() || c.arguments.front() != '{' || c.arguments.back() != '}') std::abort();
      }
      (void)r.to_message();
    } else if (r.error.empty()) {
      std::abort();
    }
  }
  auto j = dsa::text::OrderedJson::parse(s, nullptr, /*allow_exceptions=*/false);
  if (!j.is_discarded()) {
    try {
      (void)dsa::text::encode_messages(j, {.thinking = size % 2 == 0});
    } catch (const dsa::Error&) {
    }
  }
  return 0;
}
