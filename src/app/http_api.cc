// Routes of the OpenAI-compatible server; generation runs on the engine thread, and the HTTP
// server polls a GenerationReply for a plain reply or a stream of server-sent events.
#include "app/http_api.h"

#include <atomic>
#include <chrono>
#include <ctime>
#include <memory>

#include "app/http_generation.h"
#include "io/json.h"

namespace dsa::app {

using text::OrderedJson;

namespace {

std::string error_json(const ApiError& e) {
  OrderedJson err = {{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  if (!e.code.empty()) err["code"] = e.code;
  return OrderedJson({{"error", err}}).dump(-1, ' ', false, OrderedJson::error_handler_t::replace);
}

std::string dump(const OrderedJson& j) { return j.dump(-1, ' ', false, OrderedJson::error_handler_t::replace); }

int64_t now_s() { return int64_t(std::time(nullptr)); }

OrderedJson usage_json(const GenResult& r) {
  return {{"prompt_tokens", r.prompt_tokens},
          {"completion_tokens", r.generated},
          {"total_tokens", r.prompt_tokens + r.generated},
          {"prompt_tokens_details", {{"cached_tokens", r.cached_tokens}}}};
}

OrderedJson tool_calls_json(const FinalMessage& m, const std::string& id, bool with_index) {
  OrderedJson calls = OrderedJson::array();
  for (size_t i = 0; i < m.tool_calls.size(); ++i) {
    OrderedJson c;
    if (with_index) c["index"] = i;
    c["id"] = fmt::format("call_{}_{}", id, i);
    c["type"] = "function";
    c["function"] = {{"name", m.tool_calls[i].name}, {"arguments", m.tool_calls[i].arguments}};
    calls.push_back(std::move(c));
  }
  return calls;
}

std::string sse(const OrderedJson& j) { return "data: " + dump(j) + "\n\n"; }

OrderedJson chat_choice_delta(const OrderedJson& delta, const OrderedJson& finish) {
  return OrderedJson::array({{{"index", 0}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", finish}}});
}

HttpReply json_reply(int status, std::string body) {
  HttpReply r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

HttpReply error_reply(const ApiError& e) { return json_reply(e.status, error_json(e)); }

// One in-flight generation as the HTTP server sees it: polled (never blocking) for the SSE
// bytes of a stream or the reply of a plain request; cancelled when the client is gone.
class GenerationReply : public DeferredReply {
 public:
  GenerationReply(Engine& engine, std::shared_ptr<Generation> gen, bool stream) : engine_(engine), gen_(std::move(gen)), stream_(stream) {}

  uint64_t engine_id = 0;
  std::string id, model;
  int64_t created = 0;
  bool chat = true, include_usage = false, thinking = false;

  bool streaming() const override { return stream_; }
  void start(std::function<void()> wake) override {
    gen_->set_listener(std::move(wake));
  }
  void cancel() override {
    gen_->set_listener(nullptr);
    if (!cancelled_.exchange(true) && !gen_->done()) engine_.cancel(engine_id);  // frees the sequence now
  }
  std::string abort_stream_tail(const std::string& why) override {
    return sse({{"error", {{"message", why}, {"type", "server_error"}, {"param", nullptr}, {"code", "shutting_down"}}}}) +
           "data: [DONE]\n\n";
  }
  HttpReply abort_reply(const std::string& why) override {
    return error_reply({503, why, "server_error", "", "shutting_down"});
  }
  bool poll(std::string* data, HttpReply* reply) override { return stream_ ? poll_stream(*data) : poll_plain(*reply); }

 private:
  OrderedJson chunk_base() const {
    return {{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created}, {"model", model}};
  }
  OrderedJson text_choice(const std::string& text, const OrderedJson& finish) const {
    return OrderedJson::array({{{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", finish}}});
  }

  bool poll_plain(HttpReply& reply) {
    if (!gen_->done()) return false;
    const GenResult r = gen_->result();
    if (r.reason == FinishReason::kError) {
      reply = error_reply({500, strip_error_site(r.error), "server_error", "", ""});
      return true;
    }
    const FinalMessage m = gen_->final_message();
    OrderedJson out = {{"id", id}, {"object", chat ? "chat.completion" : "text_completion"}, {"created", created}, {"model", model}};
    if (chat) {
      OrderedJson msg = {{"role", "assistant"}, {"content", m.content}};
      if (!m.reasoning_content.empty() || thinking) msg["reasoning_content"] = m.reasoning_content;
      if (!m.tool_calls.empty()) {
        if (m.content.empty()) msg["content"] = nullptr;
        msg["tool_calls"] = tool_calls_json(m, id, false);
      }
      out["choices"] = OrderedJson::array(
          {{{"index", 0}, {"message", msg}, {"logprobs", nullptr}, {"finish_reason", m.finish_reason}}});
    } else {
      out["choices"] = text_choice(m.content, m.finish_reason);
    }
    out["usage"] = usage_json(r);
    reply = json_reply(200, dump(out));
    return true;
  }

  bool poll_stream(std::string& data) {
    if (!sent_role_) {
      sent_role_ = true;
      OrderedJson c = chunk_base();
      c["choices"] = chat ? chat_choice_delta({{"role", "assistant"}, {"content", ""}}, nullptr) : text_choice("", nullptr);
      data += sse(c);
    }
    const bool finished = gen_->done();  // read before the delta: nothing is missed
    const TextDelta d = gen_->take_delta();
    if (!d.empty()) {
      OrderedJson c = chunk_base();
      if (chat) {
        OrderedJson delta = OrderedJson::object();
        if (!d.reasoning.empty()) delta["reasoning_content"] = d.reasoning;
        if (!d.content.empty()) delta["content"] = d.content;
        c["choices"] = chat_choice_delta(delta, nullptr);
      } else {
        c["choices"] = text_choice(d.content, nullptr);
      }
      data += sse(c);
    }
    if (!finished) return false;
    const GenResult r = gen_->result();
    if (r.reason == FinishReason::kError) {
      data += sse({{"error", {{"message", strip_error_site(r.error)}, {"type", "server_error"}, {"param", nullptr}, {"code", nullptr}}}});
    } else {
      const FinalMessage m = gen_->final_message();
      OrderedJson c = chunk_base();
      if (chat) {
        OrderedJson delta = OrderedJson::object();
        if (!m.tool_calls.empty()) delta["tool_calls"] = tool_calls_json(m, id, true);
        c["choices"] = chat_choice_delta(delta, m.finish_reason);
      } else {
        c["choices"] = text_choice("", m.finish_reason);
      }
      data += sse(c);
      if (include_usage) {
        OrderedJson u = chunk_base();
        u["choices"] = OrderedJson::array();
        u["usage"] = usage_json(r);
        data += sse(u);
      }
    }
    data += "data: [DONE]\n\n";
    return true;
  }

  Engine& engine_;
  std::shared_ptr<Generation> gen_;
  const bool stream_;
  bool sent_role_ = false;
  std::atomic<bool> cancelled_{false};
};

}  // namespace

HttpApi::HttpApi(Engine& engine, const text::Tokenizer& tok, int32_t eos_id, HttpOptions opt)
    : engine_(engine), tok_(tok), eos_(eos_id), opt_(std::move(opt)) {}

void HttpApi::count_status(int status) {
  std::lock_guard<std::mutex> lk(mu_);
  ++by_status_[status];
}

void HttpApi::install(HttpServer& svr) {
  svr.set_error_body([](int status, const std::string& message) {
    ApiError e{status, message, status >= 500 ? "server_error" : "invalid_request_error", "", ""};
    if (status == 404) e.type = "not_found_error";
    return error_json(e);
  });
  svr.set_response_hook([this](int status) { count_status(status); });
  svr.route("GET", "/health", [this](const HttpRequest&) {
    HttpResult r;
    r.reply = draining_ ? json_reply(503, R"({"status":"draining"})") : json_reply(200, R"({"status":"ok"})");
    return r;
  });
  svr.route("GET", "/v1/models", [this](const HttpRequest&) {
    OrderedJson m = {{"id", opt_.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "dsa"},
                     {"max_model_len", opt_.limits.max_prompt_tokens + opt_.limits.max_tokens_limit}};
    HttpResult r;
    r.reply = json_reply(200, dump({{"object", "list"}, {"data", OrderedJson::array({m})}}));
    return r;
  });
  svr.route("GET", "/metrics", [this](const HttpRequest&) {
    HttpResult r;
    r.reply.content_type = "text/plain; version=0.0.4";
    r.reply.body = metrics_text();
    return r;
  });
  svr.route("POST", "/v1/chat/completions", [this](const HttpRequest& req) { return chat_or_completion(req.body, true); });
  svr.route("POST", "/v1/completions", [this](const HttpRequest& req) { return chat_or_completion(req.body, false); });
}

HttpResult HttpApi::chat_or_completion(const std::string& body, bool chat) {
  HttpResult out;
  if (draining_) {
    out.reply = error_reply({503, "the server is shutting down", "server_error", "", ""});
    return out;
  }
  ApiRequest ar;
  try {
    OrderedJson j;
    try {
      j = parse_json_ordered(body);  // depth-limited, linear time, duplicate keys refused
    } catch (const std::exception& e) {
      throw ApiError{400, fmt::format("the body is not valid JSON: {}", e.what()), "invalid_request_error", "", ""};
    }
    ar = chat ? parse_chat_request(j, tok_, opt_.limits) : parse_completion_request(j, tok_, opt_.limits);
  } catch (const ApiError& e) {
    out.reply = error_reply(e);
    return out;
  } catch (const std::exception& e) {
    out.reply = error_reply({400, strip_error_site(e.what()), "invalid_request_error", "", ""});
    return out;
  }

  auto gen = std::make_shared<Generation>(tok_, chat, ar.thinking, ar.stop);
  auto reply = std::make_shared<GenerationReply>(engine_, gen, ar.stream);
  reply->id = fmt::format("{}-{}", chat ? "chatcmpl" : "cmpl", next_id_++);
  reply->model = ar.model.empty() ? opt_.model_name : ar.model;
  reply->created = now_s();
  reply->chat = chat;
  reply->include_usage = ar.include_usage;
  reply->thinking = ar.thinking;
  GenRequest gr;
  gr.prompt = std::move(ar.prompt);
  gr.max_tokens = ar.max_tokens;
  gr.sampling = ar.sampling;
  gr.logit_bias = std::move(ar.logit_bias);
  if (!ar.ignore_eos) gr.stop_ids = {eos_};
  gr.on_token = [gen](int32_t t) { return gen->on_token(t); };
  gr.on_done = [gen](const GenResult& r) { gen->on_done(r); };
  try {
    reply->engine_id = engine_.submit(std::move(gr));
  } catch (const EngineBusy& e) {
    out.reply = error_reply({503, strip_error_site(e.what()), "server_error", "", "overloaded"});
    return out;
  } catch (const std::exception& e) {
    out.reply = error_reply({400, strip_error_site(e.what()), "invalid_request_error", "", ""});
    return out;
  }
  out.deferred = std::move(reply);
  return out;
}

std::string HttpApi::metrics_text() const {
  const EngineMetrics m = engine_.metrics();
  std::string o;
  auto metric = [&](const char* name, const char* type, const char* help) {
    o += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  };
  metric("dsa_http_requests_total", "counter", "HTTP responses by status code");
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& [code, n] : by_status_) o += fmt::format("dsa_http_requests_total{{status=\"{}\"}} {}\n", code, n);
  }
  metric("dsa_requests_finished_total", "counter", "Generation requests by finish reason");
  for (int r = 0; r < 4; ++r)
    o += fmt::format("dsa_requests_finished_total{{reason=\"{}\"}} {}\n", finish_reason_name(FinishReason(r)),
                     m.requests_finished[r]);
  metric("dsa_requests_rejected_total", "counter", "Requests refused by the engine (invalid, too large, queue full)");
  o += fmt::format("dsa_requests_rejected_total {}\n", m.requests_rejected);
  metric("dsa_prompt_tokens_total", "counter", "Prompt tokens admitted");
  o += fmt::format("dsa_prompt_tokens_total {}\n", m.prompt_tokens);
  metric("dsa_generation_tokens_total", "counter", "Tokens generated");
  o += fmt::format("dsa_generation_tokens_total {}\n", m.generated_tokens);
  metric("dsa_prefix_cache_hits_total", "counter", "Requests that reused cached prompt pages");
  o += fmt::format("dsa_prefix_cache_hits_total {}\n", m.prefix_cache_hits);
  metric("dsa_prefix_cache_tokens_total", "counter", "Prompt tokens served from the prefix cache");
  o += fmt::format("dsa_prefix_cache_tokens_total {}\n", m.prefix_cached_tokens);
  metric("dsa_decode_steps_total", "counter", "Batched decode steps");
  o += fmt::format("dsa_decode_steps_total {}\n", m.decode_steps);
  metric("dsa_prefill_steps_total", "counter", "Prefill chunks");
  o += fmt::format("dsa_prefill_steps_total {}\n", m.prefill_steps);
  metric("dsa_queue_length", "gauge", "Requests waiting for admission");
  o += fmt::format("dsa_queue_length {}\n", m.queue_length);
  metric("dsa_running_sequences", "gauge", "Sequences being prefilled or decoded");
  o += fmt::format("dsa_running_sequences {}\n", m.running);
  metric("dsa_kv_pages_in_use", "gauge", "KV cache pages allocated");
  o += fmt::format("dsa_kv_pages_in_use {}\n", m.kv_pages_in_use);
  metric("dsa_kv_pages_total", "gauge", "KV cache page budget");
  o += fmt::format("dsa_kv_pages_total {}\n", m.kv_pages_total);
  metric("dsa_prefix_cache_entries", "gauge", "Prompts held in the prefix cache");
  o += fmt::format("dsa_prefix_cache_entries {}\n", m.prefix_cache_entries);
  auto hist = [&](const char* name, const char* help, const Histogram& h) {
    metric(name, "histogram", help);
    uint64_t cum = 0;
    for (size_t i = 0; i < h.bounds.size(); ++i) {
      cum += h.counts[i];
      o += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, h.bounds[i], cum);
    }
    o += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, h.count, name, h.sum, name, h.count);
  };
  hist("dsa_time_to_first_token_seconds", "Time from submission to the first token", m.ttft);
  hist("dsa_inter_token_latency_seconds", "Time between consecutive tokens of a request", m.itl);
  return o;
}

}  // namespace dsa::app
