// OpenAI-compatible HTTP API over the engine (cpp-httplib): chat/completions (+SSE streaming),
// models, health, Prometheus metrics, JSON errors.
#pragma once
#include <atomic>
#include <map>
#include <mutex>
#include <string>

#include "app/http_request.h"
#include "runtime/engine.h"
#include "text/tokenizer.h"

namespace httplib {
class Server;
}

namespace dsa::app {

struct HttpOptions {
  std::string model_name = "dsa";
  ApiLimits limits;
  size_t max_body_bytes = 8u << 20;
};

class HttpApi {
 public:
  HttpApi(Engine& engine, const text::Tokenizer& tok, int32_t eos_id, HttpOptions opt);
  void install(httplib::Server& svr);  // routes, error/exception handlers, logger, payload limit
  void set_draining(bool d) { draining_ = d; }
  std::string metrics_text() const;

 private:
  void chat_or_completion(const std::string& body, bool chat, void* res);
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
