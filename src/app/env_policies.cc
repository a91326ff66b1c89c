// HTTP JSON client, OpenAI-endpoint policy and local model loading for dsa agent / eval.
#include "app/env_policies.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdlib>
#include <regex>

#include "base/error.h"
#include "io/json.h"
#include "ops/backends.h"
#include "text/chat_input.h"

namespace dsa::app {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

text::OrderedJson http_post_json(const std::string& url, const text::OrderedJson& body, const std::string& api_key,
                                 int timeout_s) {
  static const std::regex re(R"(^http://([^/:]+)(?::(\d+))?(/.*)?$)");
  std::smatch m;
  DSA_CHECK(std::regex_match(url, m, re), "endpoint URL must look like http://host[:port]/path (got '{}'); https is not supported", url);
  const std::string host = m[1], port = m[2].matched ? std::string(m[2]) : "80", target = m[3].matched ? std::string(m[3]) : "/";
  try {
    net::io_context ioc;
    tcp::resolver resolver(ioc);
    beast::tcp_stream stream(ioc);
    stream.expires_after(std::chrono::seconds(timeout_s));
    stream.connect(resolver.resolve(host, port));
    http::request<http::string_body> req{http::verb::post, target, 11};
    req.set(http::field::host, host);
    req.set(http::field::content_type, "application/json");
    if (!api_key.empty()) req.set(http::field::authorization, "Bearer " + api_key);
    req.body() = text::py_json_dumps(body);
    req.prepare_payload();
    http::write(stream, req);
    beast::flat_buffer buf;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    http::read(stream, buf, parser);
    const auto& res = parser.get();
    beast::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_both, ec);
    text::OrderedJson j;
    try {
      j = parse_json_ordered(res.body());
    } catch (const Error&) {
      DSA_FAIL("{}: HTTP {} with a body that is not JSON", url, res.result_int());
    }
    if (res.result_int() / 100 != 2) {
      std::string msg = j.contains("error") && j["error"].is_object() && j["error"].contains("message")
                            ? j["error"]["message"].dump() : json_excerpt(j, 200);
      DSA_FAIL("{}: HTTP {}: {}", url, res.result_int(), msg);
    }
    return j;
  } catch (const boost::system::system_error& e) {
    DSA_FAIL("{}: {}", url, e.what());
  }
}

env::PolicyReply OpenAIPolicy::next(const text::OrderedJson& messages, const env::EpisodeContext& ctx) {
  text::OrderedJson msgs = text::OrderedJson::array();
  text::OrderedJson tools;
  for (auto m : messages) {
    if (m.contains("tools")) {
      tools = m["tools"];
      m.erase("tools");
    }
    if (m.value("role", "") == "assistant" && m.contains("tool_calls")) {
      for (size_t i = 0; i < m["tool_calls"].size(); ++i)
        if (!m["tool_calls"][i].contains("id")) m["tool_calls"][i]["id"] = fmt::format("call_{}", i);
    }
    msgs.push_back(m);
  }
  text::OrderedJson body = {{"model", o_.model}, {"messages", msgs},
                            {"max_tokens", std::max<int64_t>(1, std::min(ctx.opt.max_turn_tokens, ctx.tokens_left))},
                            {"temperature", o_.temperature}, {"seed", o_.seed + uint64_t(ctx.turn)}};
  if (!tools.is_null() && !tools.empty()) body["tools"] = tools;
  env::PolicyReply r;
  try {
    const std::string key = o_.api_key.empty() && std::getenv("OPENAI_API_KEY") ? std::getenv("OPENAI_API_KEY") : o_.api_key;
    const text::OrderedJson res = http_post_json(o_.base_url + "/chat/completions", body, key);
    DSA_CHECK(res.contains("choices") && res["choices"].is_array() && !res["choices"].empty() &&
                  res["choices"][0].contains("message"), "endpoint reply without choices[0].message");
    r.structured = true;
    r.message = res["choices"][0]["message"];
    r.message["role"] = "assistant";
    if (r.message.contains("tool_calls") && (r.message["tool_calls"].is_null() || r.message["tool_calls"].empty()))
      r.message.erase("tool_calls");
    if (res.contains("usage") && res["usage"].contains("completion_tokens")) r.tokens = res["usage"]["completion_tokens"].get<int64_t>();
    // dsa serve (and DeepSeek's API) mark a completion cut by max_tokens "length": not an answer.
    if (res["choices"][0].value("finish_reason", "") == "length" && !r.message.contains("tool_calls")) {
      r.structured = false;
      r.raw = r.message.value("content", "");  // no end-of-sentence token: the parser refuses it
    }
  } catch (const std::exception& e) {
    r.ok = false;
    r.error = e.what();
  }
  return r;
}

env::ChatReply OpenAIChatEndpoint::complete(const text::OrderedJson& messages) {
  text::OrderedJson body = {{"model", o_.model}, {"messages", messages}, {"temperature", o_.temperature},
                            {"seed", o_.seed + calls_++}};
  if (max_tokens_ > 0) body["max_tokens"] = max_tokens_;
  const text::OrderedJson res = http_post_json(o_.base_url + "/chat/completions", body, o_.api_key);
  DSA_CHECK(res.contains("choices") && res["choices"].is_array() && !res["choices"].empty() &&
                res["choices"][0].contains("message") && res["choices"][0]["message"].is_object(),
            "endpoint reply without choices[0].message");
  const auto& msg = res["choices"][0]["message"];
  env::ChatReply r;
  if (msg.contains("content") && msg["content"].is_string()) r.text = msg["content"].get<std::string>();
  const auto& fin = res["choices"][0];
  r.truncated = fin.contains("finish_reason") && fin["finish_reason"].is_string() && fin["finish_reason"] == "length";
  return r;
}

std::unique_ptr<LocalModel> LocalModel::load(const std::string& dir, const std::string& tokenizer, const std::string& backend,
                                             int batch) {
  auto lm = std::make_unique<LocalModel>();
  auto log = [](const std::string& s) { fmt::print(stderr, "[dsa] {}\n", s); };
  lm->model = Model::load(dir, ops::select_backend(backend), log);
  lm->tok = std::make_unique<text::Tokenizer>(text::Tokenizer::from_file(tokenizer.empty() ? text::default_tokenizer_path(dir) : tokenizer));
  EngineOptions eo;
  eo.max_batch = std::max(1, batch);
  eo.kv_pages = 256 * eo.max_batch;
  eo.prewarm_kv = false;
  lm->engine = std::make_unique<Engine>(*lm->model, eo);
  return lm;
}

int32_t LocalModel::eos() const { return int32_t(model->config().eos_token_id); }

}  // namespace dsa::app
