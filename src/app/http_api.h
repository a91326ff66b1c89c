// OpenAI-compatible HTTP API over the engine (routes of app/http_server.h): chat/completions
// (+SSE streaming), models, health, Prometheus metrics, JSON errors.
#pragma once
#include <atomic>
#include <map>
#include <mutex>
#include <string>

#include "app/http_request.h"
#include "app/http_server.h"
#include "runtime/engine.h"
#include "text/tokenizer.h"

namespace dsa::app {

struct HttpOptions {
  std::string model_name = "dsa";
  ApiLimits limits;
};

class HttpApi {
 public:
  HttpApi(Engine& engine, const text::Tokenizer& tok, int32_t eos_id, HttpOptions opt);
  void install(HttpServer& svr);  // routes, error bodies, response counting
  void set_draining(bool d) { draining_ = d; }
  std::string metrics_text() const;

 private:
  HttpResult chat_or_completion(const std::string& body, bool chat);
  void count_status(int status);

  Engine& engine_;
  const text::Tokenizer& tok_;
  int32_t eos_;
  HttpOptions opt_;
  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> next_id_{1};
  mutable std::mutex mu_;
  std::map<int, uint64_t> by_status_;  // HTTP responses by status code
};

}  // namespace dsa::app
