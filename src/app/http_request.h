// OpenAI-compatible request bodies (/v1/chat/completions, /v1/completions): strict validation
// (types, ranges, unknown fields) and conversion to prompt tokens + generation parameters.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "runtime/sampler.h"
#include "text/py_json.h"
#include "text/tokenizer.h"

namespace dsa::app {

// A client error: HTTP status + OpenAI error object fields.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // empty = null
  std::string code;   // empty = null
};

struct ApiLimits {
  int64_t max_prompt_tokens = 8192;
  int64_t max_tokens_limit = 4096;  // largest max_tokens a request may ask for
  int64_t default_max_tokens = 256; // chat default when the request gives none
  int64_t completion_default_max_tokens = 16;
};

struct ApiRequest {
  bool chat = true;
  bool stream = false, include_usage = false;
  bool thinking = false;
  std::string model;
  std::vector<int32_t> prompt;
  int64_t max_tokens = 0;
  SamplingParams sampling;
  bool seeded = false;
  std::vector<std::string> stop;
  std::vector<std::pair<int32_t, float>> logit_bias;
  bool ignore_eos = false;
};

// Both throw ApiError. The tokenizer encodes the prompt; limits bound its length and max_tokens.
ApiRequest parse_chat_request(const text::OrderedJson& body, const text::Tokenizer& tok, const ApiLimits& lim);
ApiRequest parse_completion_request(const text::OrderedJson& body, const text::Tokenizer& tok, const ApiLimits& lim);

// "src/x.cc:12: message" -> "message" (dsa::Error texts carry the throw site).
std::string strip_error_site(const std::string& what);

}  // namespace dsa::app
