// Text side of one generation (server and `dsa chat`): incremental detokenisation, stop strings,
// streaming split into reasoning / content (tool-call blocks held back), final V3.2 parse.
#pragma once
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/engine.h"
#include "text/completion_parser.h"
#include "text/tokenizer.h"

namespace dsa::app {

struct TextDelta {
  std::string reasoning, content;
  bool empty() const { return reasoning.empty() && content.empty(); }
};

struct FinalMessage {
  std::string content, reasoning_content;
  std::vector<text::ParsedToolCall> tool_calls;
  bool parsed = false;  // the completion was a well-formed V3.2 message
  std::string finish_reason;  // stop / length / tool_calls / error / cancelled
};

class Generation {
 public:
  // chat: V3.2 chat output (reasoning/content/DSML split); else raw completion text.
  Generation(const text::Tokenizer& tok, bool chat, bool thinking, std::vector<std::string> stops);

  // Engine-thread callbacks (wire them into GenRequest).
  bool on_token(int32_t t);  // false once a stop string matched
  void on_done(const GenResult& r);

  // Consumer side. wait: until new text or the end (or the timeout); true if something happened.
  bool wait(std::chrono::milliseconds timeout);
  // Called (engine thread, outside the lock) after every new token and at the end; set it before
  // submitting or check done() after setting it. An empty function removes it.
  void set_listener(std::function<void()> fn);
  TextDelta take_delta();  // text that can be shown now (never part of a possible stop string)
  bool done() const;
  GenResult result() const;      // valid once done()
  FinalMessage final_message() const;  // valid once done()
  std::string text() const;      // the whole (stop-truncated) completion text

 private:
  size_t safe_end_locked() const;
  const text::Tokenizer& tok_;
  text::IncrementalDecoder dec_;
  const bool chat_, thinking_;
  std::vector<std::string> stops_, markers_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string text_;
  bool stopped_ = false, done_ = false, changed_ = false;
  GenResult result_;
  std::function<void()> listener_;
  // streaming state (consumer)
  size_t emitted_ = 0;
  int phase_ = 0;  // 0 reasoning, 1 content, 2 inside a tool-call block (held back)
};

}  // namespace dsa::app
