// Routes of the OpenAI-compatible server; generation runs on the engine thread, handlers wait
// on a Generation (non-streaming) or stream its deltas as server-sent events.
#include "app/http_api.h"

#include <httplib.h>

#include <chrono>
#include <ctime>
#include <memory>

#include "app/http_generation.h"

namespace dsa::app {

using text::OrderedJson;

namespace {

std::string error_json(const ApiError& e) {
  OrderedJson err = {{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  if (!e.code.empty()) err["code"] = e.code;
  return OrderedJson({{"error", err}}).dump(-1, ' ', false, OrderedJson::error_handler_t::replace);
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(error_json(e), "application/json");
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

// One in-flight HTTP generation: what the streaming provider needs between calls.
struct Flight {
  std::shared_ptr<Generation> gen;
  uint64_t engine_id = 0;
  std::string id, model;
  int64_t created = 0;
  bool chat = true, include_usage = false, sent_role = false;
};

std::string sse(const OrderedJson& j) { return "data: " + dump(j) + "\n\n"; }

OrderedJson chunk_base(const Flight& f) {
  return {{"id", f.id}, {"object", f.chat ? "chat.completion.chunk" : "text_completion"}, {"created", f.created},
          {"model", f.model}};
}

OrderedJson chat_choice_delta(const OrderedJson& delta, const OrderedJson& finish) {
  return OrderedJson::array({{{"index", 0}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", finish}}});
}

}  // namespace

HttpApi::HttpApi(Engine& engine, const text::Tokenizer& tok, int32_t eos_id, HttpOptions opt)
    : engine_(engine), tok_(tok), eos_(eos_id), opt_(std::move(opt)) {}

void HttpApi::count_status(int status) {
  std::lock_guard<std::mutex> lk(mu_);
  ++by_status_[status];
}

void HttpApi::install(httplib::Server& svr) {
  svr.set_payload_max_length(opt_.max_body_bytes);
  svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;  // our own JSON error
    ApiError e{res.status, fmt::format("HTTP error {}", res.status), "invalid_request_error", "", ""};
    if (res.status == 400) e.message = "malformed HTTP request";
    if (res.status == 405) e.message = "method not allowed";
    if (res.status == 404) e = {404, "no such endpoint", "not_found_error", "", ""};
    if (res.status == 413) e.message = "the request body is too large";
    send_error(res, e);
  });
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string msg = "internal error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      msg = strip_error_site(e.what());
    } catch (...) {
    }
    send_error(res, {500, msg, "server_error", "", ""});
  });
  svr.set_logger([this](const httplib::Request&, const httplib::Response& res) { count_status(res.status); });

  svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (draining_) {
      res.status = 503;
      res.set_content(R"({"status":"draining"})", "application/json");
      return;
    }
    res.set_content(R"({"status":"ok"})", "application/json");
  });
  svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    OrderedJson m = {{"id", opt_.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "dsa"},
                     {"max_model_len", opt_.limits.max_prompt_tokens + opt_.limits.max_tokens_limit}};
    res.set_content(dump({{"object", "list"}, {"data", OrderedJson::array({m})}}), "application/json");
  });
  svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(), "text/plain; version=0.0.4");
  });
  svr.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    chat_or_completion(req.body, true, &res);
  });
  svr.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    chat_or_completion(req.body, false, &res);
  });
}

void HttpApi::chat_or_completion(const std::string& body, bool chat, void* res_ptr) {
  httplib::Response& res = *static_cast<httplib::Response*>(res_ptr);
  if (draining_) return send_error(res, {503, "the server is shutting down", "server_error", "", ""});
  ApiRequest ar;
  try {
    OrderedJson j;
    try {
      j = OrderedJson::parse(body);
    } catch (const std::exception& e) {
      throw ApiError{400, fmt::format("the body is not valid JSON: {}", e.what()), "invalid_request_error", "", ""};
    }
    ar = chat ? parse_chat_request(j, tok_, opt_.limits) : parse_completion_request(j, tok_, opt_.limits);
  } catch (const ApiError& e) {
    return send_error(res, e);
  } catch (const std::exception& e) {
    return send_error(res, {400, strip_error_site(e.what()), "invalid_request_error", "", ""});
  }

  auto f = std::make_shared<Flight>();
  f->gen = std::make_shared<Generation>(tok_, chat, ar.thinking, ar.stop);
  f->id = fmt::format("{}-{}", chat ? "chatcmpl" : "cmpl", next_id_++);
  f->model = ar.model.empty() ? opt_.model_name : ar.model;
  f->created = now_s();
  f->chat = chat;
  f->include_usage = ar.include_usage;
  GenRequest gr;
  gr.prompt = std::move(ar.prompt);
  gr.max_tokens = ar.max_tokens;
  gr.sampling = ar.sampling;
  gr.logit_bias = std::move(ar.logit_bias);
  if (!ar.ignore_eos) gr.stop_ids = {eos_};
  std::shared_ptr<Generation> gen = f->gen;
  gr.on_token = [gen](int32_t t) { return gen->on_token(t); };
  gr.on_done = [gen](const GenResult& r) { gen->on_done(r); };
  try {
    f->engine_id = engine_.submit(std::move(gr));
  } catch (const EngineBusy& e) {
    return send_error(res, {503, strip_error_site(e.what()), "server_error", "", "overloaded"});
  } catch (const std::exception& e) {
    return send_error(res, {400, strip_error_site(e.what()), "invalid_request_error", "", ""});
  }

  if (!ar.stream) {
    while (!gen->done()) gen->wait(std::chrono::milliseconds(200));
    const GenResult r = gen->result();
    if (r.reason == FinishReason::kError)
      return send_error(res, {500, strip_error_site(r.error), "server_error", "", ""});
    const FinalMessage m = gen->final_message();
    OrderedJson out = {{"id", f->id}, {"object", chat ? "chat.completion" : "text_completion"},
                       {"created", f->created}, {"model", f->model}};
    if (chat) {
      OrderedJson msg = {{"role", "assistant"}, {"content", m.content}};
      if (!m.reasoning_content.empty() || ar.thinking) msg["reasoning_content"] = m.reasoning_content;
      if (!m.tool_calls.empty()) {
        if (m.content.empty()) msg["content"] = nullptr;
        msg["tool_calls"] = tool_calls_json(m, f->id, false);
      }
      out["choices"] = OrderedJson::array(
          {{{"index", 0}, {"message", msg}, {"logprobs", nullptr}, {"finish_reason", m.finish_reason}}});
    } else {
      out["choices"] = OrderedJson::array(
          {{{"index", 0}, {"text", m.content}, {"logprobs", nullptr}, {"finish_reason", m.finish_reason}}});
    }
    out["usage"] = usage_json(r);
    res.set_content(dump(out), "application/json");
    return;
  }

  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  Engine* engine = &engine_;
  res.set_chunked_content_provider(
      "text/event-stream",
      [f](size_t, httplib::DataSink& sink) {
        auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
        if (!f->sent_role) {
          f->sent_role = true;
          OrderedJson c = chunk_base(*f);
          if (f->chat)
            c["choices"] = chat_choice_delta({{"role", "assistant"}, {"content", ""}}, nullptr);
          else
            c["choices"] = OrderedJson::array({{{"index", 0}, {"text", ""}, {"logprobs", nullptr}, {"finish_reason", nullptr}}});
          if (!write(sse(c))) return false;
        }
        f->gen->wait(std::chrono::milliseconds(100));
        const bool finished = f->gen->done();  // read before the delta: nothing is missed
        const TextDelta d = f->gen->take_delta();
        if (!d.empty()) {
          OrderedJson c = chunk_base(*f);
          if (f->chat) {
            OrderedJson delta = OrderedJson::object();
            if (!d.reasoning.empty()) delta["reasoning_content"] = d.reasoning;
            if (!d.content.empty()) delta["content"] = d.content;
            c["choices"] = chat_choice_delta(delta, nullptr);
          } else {
            c["choices"] = OrderedJson::array({{{"index", 0}, {"text", d.content}, {"logprobs", nullptr}, {"finish_reason", nullptr}}});
          }
          if (!write(sse(c))) return false;
        } else if (!sink.is_writable()) {
          return false;
        }
        if (!finished) return true;
        const GenResult r = f->gen->result();
        if (r.reason == FinishReason::kError) {
          write(sse({{"error", {{"message", strip_error_site(r.error)}, {"type", "server_error"}, {"param", nullptr}, {"code", nullptr}}}}));
        } else {
          const FinalMessage m = f->gen->final_message();
          OrderedJson c = chunk_base(*f);
          if (f->chat) {
            OrderedJson delta = OrderedJson::object();
            if (!m.tool_calls.empty()) delta["tool_calls"] = tool_calls_json(m, f->id, true);
            c["choices"] = chat_choice_delta(delta, m.finish_reason);
          } else {
            c["choices"] = OrderedJson::array({{{"index", 0}, {"text", ""}, {"logprobs", nullptr}, {"finish_reason", m.finish_reason}}});
          }
          if (!write(sse(c))) return false;
          if (f->include_usage) {
            OrderedJson u = chunk_base(*f);
            u["choices"] = OrderedJson::array();
            u["usage"] = usage_json(r);
            if (!write(sse(u))) return false;
          }
        }
        write("data: [DONE]\n\n");
        sink.done();
        return true;
      },
      [f, engine](bool) {
        if (!f->gen->done()) engine->cancel(f->engine_id);  // client went away: free the sequence now
      });
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
