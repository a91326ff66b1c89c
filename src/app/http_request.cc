// Validation of OpenAI-style request bodies and their conversion to prompt tokens + parameters.
#include "app/http_request.h"

#include <fmt/format.h>

#include <random>
#include <regex>
#include <set>

#include "base/error.h"
#include "text/chat_encoding.h"
#include "text/chat_input.h"

namespace dsa::app {

using text::OrderedJson;

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& msg) {
  throw ApiError{400, msg, "invalid_request_error", param, ""};
}

void check_fields(const OrderedJson& body, const std::set<std::string>& allowed) {
  if (!body.is_object()) bad("", "the request body must be a JSON object");
  for (auto it = body.begin(); it != body.end(); ++it)
    if (!allowed.count(it.key())) bad(it.key(), fmt::format("unknown or unsupported field '{}'", it.key()));
}

const OrderedJson* get(const OrderedJson& body, const char* key) {
  auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

bool get_bool(const OrderedJson& body, const char* key, bool dflt) {
  const OrderedJson* v = get(body, key);
  if (!v) return dflt;
  if (!v->is_boolean()) bad(key, fmt::format("'{}' must be a boolean", key));
  return v->get<bool>();
}

double get_number(const OrderedJson& body, const char* key, double dflt, double lo, double hi) {
  const OrderedJson* v = get(body, key);
  if (!v) return dflt;
  if (!v->is_number()) bad(key, fmt::format("'{}' must be a number", key));
  const double d = v->get<double>();
  if (!(d >= lo && d <= hi)) bad(key, fmt::format("'{}' must be in [{}, {}], got {}", key, lo, hi, d));
  return d;
}

int64_t get_int(const OrderedJson& body, const char* key, int64_t dflt, int64_t lo, int64_t hi) {
  const OrderedJson* v = get(body, key);
  if (!v) return dflt;
  if (!v->is_number_integer()) bad(key, fmt::format("'{}' must be an integer", key));
  if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX)) bad(key, fmt::format("'{}' is out of range", key));
  const int64_t i = v->get<int64_t>();
  if (i < lo || i > hi) bad(key, fmt::format("'{}' must be in [{}, {}], got {}", key, lo, hi, i));
  return i;
}

// Sampling, stop, logit_bias, max_tokens, stream: shared by both endpoints.
void parse_common(const OrderedJson& body, const ApiLimits& lim, int64_t default_max, int32_t vocab, ApiRequest& r) {
  if (const OrderedJson* m = get(body, "model")) {
    if (!m->is_string()) bad("model", "'model' must be a string");
    r.model = m->get<std::string>();
  }
  r.stream = get_bool(body, "stream", false);
  if (const OrderedJson* so = get(body, "stream_options")) {
    if (!so->is_object()) bad("stream_options", "'stream_options' must be an object");
    for (auto it = so->begin(); it != so->end(); ++it)
      if (it.key() != "include_usage" && it.key() != "continuous_usage_stats")
        bad("stream_options", fmt::format("unknown field 'stream_options.{}'", it.key()));
    r.include_usage = get_bool(*so, "include_usage", false);
  }
  int64_t mt = -1;
  for (const char* key : {"max_tokens", "max_completion_tokens"})
    if (get(body, key)) {
      const int64_t v = get_int(body, key, 0, 1, INT64_MAX);
      if (v > lim.max_tokens_limit)
        bad(key, fmt::format("'{}' is {} but this server allows at most {}", key, v, lim.max_tokens_limit));
      mt = v;
    }
  r.max_tokens = mt > 0 ? mt : std::min(default_max, lim.max_tokens_limit);
  r.sampling.temperature = float(get_number(body, "temperature", 1.0, 0.0, 2.0));
  r.sampling.top_p = float(get_number(body, "top_p", 1.0, 0.0, 1.0));
  if (get(body, "top_p") && r.sampling.top_p <= 0.0f) bad("top_p", "'top_p' must be > 0");
  const int64_t k = get_int(body, "top_k", 0, -1, INT32_MAX);
  r.sampling.top_k = k < 0 ? 0 : k;
  if (get(body, "seed")) {
    r.sampling.seed = uint64_t(get_int(body, "seed", 0, INT64_MIN, INT64_MAX));
    r.seeded = true;
  } else {
    static std::random_device rd;
    r.sampling.seed = (uint64_t(rd()) << 32) ^ rd();
  }
  if (get_int(body, "n", 1, 1, 1) != 1) bad("n", "only n = 1 is supported");
  for (const char* key : {"presence_penalty", "frequency_penalty"})
    if (get_number(body, key, 0.0, -2.0, 2.0) != 0.0) bad(key, fmt::format("'{}' is not supported (only 0)", key));
  if (const OrderedJson* u = get(body, "user"); u && !u->is_string()) bad("user", "'user' must be a string");
  if (const OrderedJson* s = get(body, "stop")) {
    if (s->is_string()) {
      r.stop.push_back(s->get<std::string>());
    } else if (s->is_array()) {
      for (const auto& x : *s) {
        if (!x.is_string()) bad("stop", "'stop' must be a string or a list of strings");
        r.stop.push_back(x.get<std::string>());
      }
    } else {
      bad("stop", "'stop' must be a string or a list of strings");
    }
    if (r.stop.size() > 16) bad("stop", "at most 16 stop strings");
    for (const auto& x : r.stop)
      if (x.empty()) bad("stop", "stop strings must not be empty");
  }
  if (const OrderedJson* lb = get(body, "logit_bias")) {
    if (!lb->is_object()) bad("logit_bias", "'logit_bias' must be an object of token id -> bias");
    for (auto it = lb->begin(); it != lb->end(); ++it) {
      static const std::regex kDigits("[0-9]{1,10}");
      if (!std::regex_match(it.key(), kDigits) || std::stoll(it.key()) >= vocab)
        bad("logit_bias", fmt::format("logit_bias: '{}' is not a token id below {}", it.key(), vocab));
      if (!it.value().is_number() || !(it.value().get<double>() >= -100 && it.value().get<double>() <= 100))
        bad("logit_bias", "logit_bias values must be numbers in [-100, 100]");
      r.logit_bias.emplace_back(int32_t(std::stoll(it.key())), it.value().get<float>());
    }
  }
  r.ignore_eos = get_bool(body, "ignore_eos", false);
}

void check_prompt_len(const ApiRequest& r, const ApiLimits& lim) {
  if (int64_t(r.prompt.size()) > lim.max_prompt_tokens)
    throw ApiError{400,
                   fmt::format("the prompt has {} tokens but this server accepts at most {}", r.prompt.size(),
                               lim.max_prompt_tokens),
                   "invalid_request_error", "messages", "context_length_exceeded"};
  if (r.prompt.empty()) bad("prompt", "the prompt is empty");
}

// A list of message objects; their content (string, text parts or null) is checked by the encoder.
OrderedJson check_messages(const OrderedJson& msgs) {
  if (!msgs.is_array() || msgs.empty()) bad("messages", "'messages' must be a non-empty list");
  for (size_t i = 0; i < msgs.size(); ++i)
    if (!msgs[i].is_object()) bad("messages", fmt::format("messages[{}] must be an object", i));
  return msgs;
}

// OpenAI response_format: "text" is the default (no block); json_object / json_schema are rendered
// as the template's response-format block on the system message (guidance only: decoding is not
// constrained).
const OrderedJson* response_format(const OrderedJson& body) {
  const OrderedJson* rf = get(body, "response_format");
  if (!rf) return nullptr;
  if (!rf->is_object() || !rf->contains("type") || !(*rf)["type"].is_string())
    bad("response_format", "'response_format' must be an object with a string 'type'");
  const std::string type = (*rf)["type"].get<std::string>();
  if (type == "text") return nullptr;
  if (type == "json_schema") {
    if (!rf->contains("json_schema") || !(*rf)["json_schema"].is_object())
      bad("response_format", "response_format of type json_schema needs a 'json_schema' object");
  } else if (type != "json_object") {
    bad("response_format", fmt::format("response_format type '{}' is not one of text, json_object, json_schema", type));
  }
  return rf;
}

}  // namespace

std::string strip_error_site(const std::string& what) {
  static const std::regex kSite(R"(^[^\s:]+\.(cc|h|cpp):\d+: )");
  return std::regex_replace(what, kSite, "", std::regex_constants::format_first_only);
}

ApiRequest parse_chat_request(const OrderedJson& body, const text::Tokenizer& tok, const ApiLimits& lim) {
  check_fields(body, {"model", "messages", "tools", "tool_choice", "stream", "stream_options", "max_tokens",
                      "max_completion_tokens", "temperature", "top_p", "top_k", "seed", "stop", "n", "user",
                      "presence_penalty", "frequency_penalty", "logit_bias", "chat_template_kwargs",
                      "parallel_tool_calls", "logprobs", "ignore_eos", "response_format",
                      "special_in_content"});
  ApiRequest r;
  r.chat = true;
  parse_common(body, lim, lim.default_max_tokens, int32_t(tok.id_limit()), r);
  if (get_bool(body, "logprobs", false)) bad("logprobs", "logprobs are not supported");
  get_bool(body, "parallel_tool_calls", true);
  if (const OrderedJson* kw = get(body, "chat_template_kwargs")) {
    if (!kw->is_object()) bad("chat_template_kwargs", "'chat_template_kwargs' must be an object");
    for (auto it = kw->begin(); it != kw->end(); ++it)
      if (it.key() != "thinking" && it.key() != "enable_thinking")
        bad("chat_template_kwargs", fmt::format("unknown chat_template_kwargs field '{}'", it.key()));
    r.thinking = get_bool(*kw, "thinking", false) || get_bool(*kw, "enable_thinking", false);
  }
  const OrderedJson* msgs = get(body, "messages");
  if (!msgs) bad("messages", "'messages' is required");
  OrderedJson messages = check_messages(*msgs);
  bool use_tools = true;
  if (const OrderedJson* tc = get(body, "tool_choice")) {
    if (!tc->is_string() || (*tc != "auto" && *tc != "none"))
      bad("tool_choice", "tool_choice must be \"auto\" or \"none\" (forcing a tool is not supported)");
    use_tools = *tc == "auto";
  }
  if (const OrderedJson* tools = get(body, "tools")) {
    if (!tools->is_array()) bad("tools", "'tools' must be a list");
    for (const auto& t : *tools)
      if (!t.is_object() || t.value("type", "") != "function" || !t.contains("function") ||
          !t["function"].is_object() || !t["function"].contains("name") || !t["function"]["name"].is_string())
        bad("tools", "each tool must be {\"type\": \"function\", \"function\": {\"name\": ..., ...}}");
    if (use_tools && !tools->empty()) messages = text::attach_tools(messages, *tools);
  }
  if (const OrderedJson* rf = response_format(body)) messages = text::attach_response_format(messages, *rf);
  // Extension: message text may produce special tokens (default: it is plain text, so a message
  // cannot close its turn or forge assistant / tool turns).
  const bool special_in_content = get_bool(body, "special_in_content", false);
  text::RenderedPrompt prompt;
  try {
    prompt = text::render_messages(messages, {.thinking = r.thinking});
  } catch (const std::exception& e) {
    bad("messages", strip_error_site(e.what()));
  }
  r.prompt = text::encode_rendered(tok, prompt, special_in_content);
  check_prompt_len(r, lim);
  return r;
}

ApiRequest parse_completion_request(const OrderedJson& body, const text::Tokenizer& tok, const ApiLimits& lim) {
  check_fields(body, {"model", "prompt", "stream", "stream_options", "max_tokens", "temperature", "top_p", "top_k",
                      "seed", "stop", "n", "user", "presence_penalty", "frequency_penalty", "logit_bias", "echo",
                      "logprobs", "ignore_eos"});
  ApiRequest r;
  r.chat = false;
  parse_common(body, lim, lim.completion_default_max_tokens, int32_t(tok.id_limit()), r);
  if (get_bool(body, "echo", false)) bad("echo", "echo is not supported");
  if (get(body, "logprobs")) bad("logprobs", "logprobs are not supported");
  const OrderedJson* p = get(body, "prompt");
  if (!p) bad("prompt", "'prompt' is required");
  const OrderedJson* one = p;
  if (p->is_array() && !p->empty() && (p->front().is_string() || p->front().is_array())) {
    if (p->size() != 1) bad("prompt", "only one prompt per request is supported");
    one = &p->front();
  }
  if (one->is_string()) {
    r.prompt = tok.encode(one->get<std::string>());
  } else if (one->is_array()) {
    for (const auto& x : *one) {
      if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= tok.id_limit())
        bad("prompt", fmt::format("prompt token ids must be integers in [0, {})", tok.id_limit()));
      r.prompt.push_back(int32_t(x.get<int64_t>()));
    }
  } else {
    bad("prompt", "'prompt' must be a string, a list of token ids, or a list with one of those");
  }
  check_prompt_len(r, lim);
  return r;
}

}  // namespace dsa::app
