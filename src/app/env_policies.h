// App-side pieces of the agent loop: a plain-HTTP JSON client, the OpenAI-endpoint policy (any
// OpenAI-compatible server, dsa serve included) and a local model on the engine.
#pragma once
#include <memory>
#include <string>

#include "env/agent.h"
#include "env/model_synth.h"
#include "runtime/engine.h"
#include "text/tokenizer.h"

namespace dsa::app {

// POSTs a JSON body to http://host[:port]/path and returns the parsed JSON reply. Throws
// dsa::Error on connection failures, non-2xx statuses (with the body's error message) and bad
// JSON. https is not supported (put a local proxy in front).
text::OrderedJson http_post_json(const std::string& url, const text::OrderedJson& body, const std::string& api_key,
                                 int timeout_s = 300);

struct EndpointOptions {
  std::string base_url;   // e.g. http://127.0.0.1:8000/v1
  std::string model;      // the "model" field
  std::string api_key;    // Authorization: Bearer (default $OPENAI_API_KEY)
  float temperature = 0;
  uint64_t seed = 0;
};

// The policy through /chat/completions: tools go as the request's tools, the reply's message
// (content, reasoning_content, tool_calls) is used as is.
class OpenAIPolicy : public env::Policy {
 public:
  explicit OpenAIPolicy(EndpointOptions o) : o_(std::move(o)) {}
  env::PolicyReply next(const text::OrderedJson& messages, const env::EpisodeContext& ctx) override;

 private:
  EndpointOptions o_;
};

// The model-driven synthesizer's endpoint through /chat/completions (plain messages, no tools):
// the reply's content; finish_reason "length" marks it truncated. max_tokens 0 = the server's
// default.
class OpenAIChatEndpoint : public env::ChatEndpoint {
 public:
  OpenAIChatEndpoint(EndpointOptions o, int64_t max_tokens) : o_(std::move(o)), max_tokens_(max_tokens) {}
  env::ChatReply complete(const text::OrderedJson& messages) override;

 private:
  EndpointOptions o_;
  int64_t max_tokens_;
  uint64_t calls_ = 0;
};

// A model directory loaded with its tokenizer and an engine sized for `batch` concurrent episodes.
struct LocalModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<text::Tokenizer> tok;
  std::unique_ptr<Engine> engine;
  static std::unique_ptr<LocalModel> load(const std::string& dir, const std::string& tokenizer, const std::string& backend,
                                          int batch);
  int32_t eos() const;
};

}  // namespace dsa::app
