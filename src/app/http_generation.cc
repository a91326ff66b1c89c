// Generation: detokenise on the engine thread, hand out safe text deltas to the consumer.
#include "app/http_generation.h"

#include <algorithm>

#include "text/chat_encoding.h"

namespace dsa::app {

namespace {
const std::string kToolMarker = std::string("\n\n<") + text::kDsml + "function_calls";
}

Generation::Generation(const text::Tokenizer& tok, bool chat, bool thinking, std::vector<std::string> stops)
    : tok_(tok), dec_(tok, /*skip_special=*/false), chat_(chat), thinking_(chat && thinking), stops_(std::move(stops)) {
  phase_ = thinking_ ? 0 : 1;
  markers_ = stops_;
  if (chat_) {
    markers_.push_back(text::kThinkEnd);
    markers_.push_back(kToolMarker);
  }
}

bool Generation::on_token(int32_t t) {
  std::string piece = tok_.is_valid_id(t) ? dec_.push(t) : std::string();
  std::unique_lock<std::mutex> lk(mu_);
  if (stopped_) return false;
  const size_t old = text_.size();
  text_ += piece;
  for (const auto& s : stops_) {
    const size_t from = old >= s.size() ? old - s.size() + 1 : 0;
    const size_t p = text_.find(s, from);
    if (p != std::string::npos) {
      text_.resize(p);
      stopped_ = true;
    }
  }
  changed_ = true;
  cv_.notify_all();
  const bool go_on = !stopped_;
  std::function<void()> l = listener_;
  lk.unlock();
  if (l) l();
  return go_on;
}

void Generation::set_listener(std::function<void()> fn) {
  std::lock_guard<std::mutex> lk(mu_);
  listener_ = std::move(fn);
}

void Generation::on_done(const GenResult& r) {
  std::string rest = dec_.flush();
  std::unique_lock<std::mutex> lk(mu_);
  if (!stopped_) text_ += rest;
  result_ = r;
  done_ = true;
  changed_ = true;
  cv_.notify_all();
  std::function<void()> l = listener_;
  lk.unlock();
  if (l) l();
}

bool Generation::wait(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait_for(lk, timeout, [&] { return changed_ || done_; });
  const bool any = changed_ || done_;
  changed_ = false;
  return any;
}

bool Generation::done() const {
  std::lock_guard<std::mutex> lk(mu_);
  return done_;
}

GenResult Generation::result() const {
  std::lock_guard<std::mutex> lk(mu_);
  return result_;
}

std::string Generation::text() const {
  std::lock_guard<std::mutex> lk(mu_);
  return text_;
}

// End of the text that can be shown: everything, minus a tail that could still grow into a stop
// string or a marker (while generation goes on).
size_t Generation::safe_end_locked() const {
  if (done_) return text_.size();
  size_t hold = 0;
  for (const auto& m : markers_)
    for (size_t k = std::min(m.size() - 1, text_.size()); k > hold; --k)
      if (text_.compare(text_.size() - k, k, m, 0, k) == 0) {
        hold = k;
        break;
      }
  return text_.size() - hold;
}

TextDelta Generation::take_delta() {
  std::lock_guard<std::mutex> lk(mu_);
  TextDelta d;
  const size_t safe = safe_end_locked();
  while (emitted_ < safe && phase_ < 2) {
    if (phase_ == 0) {
      const size_t p = text_.find(text::kThinkEnd, emitted_);
      if (p != std::string::npos && p + std::string(text::kThinkEnd).size() <= safe) {
        d.reasoning += text_.substr(emitted_, p - emitted_);
        emitted_ = p + std::string(text::kThinkEnd).size();
        phase_ = 1;
        continue;
      }
      d.reasoning += text_.substr(emitted_, safe - emitted_);
      emitted_ = safe;
    } else {
      const size_t p = chat_ ? text_.find(kToolMarker, emitted_) : std::string::npos;
      if (p != std::string::npos && p < safe) {
        d.content += text_.substr(emitted_, p - emitted_);
        emitted_ = p;
        phase_ = 2;  // the tool calls come with the final message
        break;
      }
      d.content += text_.substr(emitted_, safe - emitted_);
      emitted_ = safe;
    }
  }
  return d;
}

FinalMessage Generation::final_message() const {
  std::lock_guard<std::mutex> lk(mu_);
  FinalMessage m;
  const FinishReason r = result_.reason;
  m.finish_reason = r == FinishReason::kLength ? "length" : r == FinishReason::kStop ? "stop" : finish_reason_name(r);
  if (!chat_) {
    m.content = text_;
    m.parsed = true;
    return m;
  }
  // The engine stops on the end-of-sentence token without passing it on; the parser (like the
  // official one) wants it at the end of a message.
  const bool eos = r == FinishReason::kStop && !stopped_;
  const text::ParsedCompletion p = text::parse_completion(eos ? text_ + text::kEos : text_, thinking_);
  if (p.ok) {
    m.parsed = true;
    m.content = p.content;
    m.reasoning_content = p.reasoning_content;
    m.tool_calls = p.tool_calls;
    if (!m.tool_calls.empty() && r == FinishReason::kStop) m.finish_reason = "tool_calls";
    return m;
  }
  // Not a well-formed message (cut by max_tokens, or a random-weight model): split at </think>.
  if (thinking_) {
    const size_t e = text_.find(text::kThinkEnd);
    if (e == std::string::npos) {
      m.reasoning_content = text_;
    } else {
      m.reasoning_content = text_.substr(0, e);
      m.content = text_.substr(e + std::string(text::kThinkEnd).size());
    }
  } else {
    m.content = text_;
  }
  return m;
}

}  // namespace dsa::app
