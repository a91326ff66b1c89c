// The one parse entry point for JSON that comes from outside (request bodies, config.json, index
// files, safetensors headers, messages files, tokenizer.json, tool-call arguments): nesting
// depth limited, linear time in the input (objects with many keys included), duplicate keys refused
// (no silent last-wins: {"a": 1, "a": 2} is an error).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace dsa {

inline constexpr int kJsonMaxDepth = 128;  // nested arrays/objects; deeper input is refused

// Integers beyond 64 bits (exact_integers): a binary value of this subtype holding the decimal
// digits (text/py_json.h prints them back exactly, as Python's json does).
inline constexpr uint64_t kJsonBigIntSubtype = 0x4249;  // "BI"

struct JsonOptions {
  int max_depth = kJsonMaxDepth;
  bool exact_integers = false;  // integer literals beyond 64 bits kept exact (else parsed as doubles)
};

// Throws dsa::Error with a message naming the line/column of the problem; the message never
// quotes the input (files outside the model directory must not leak through errors).
nlohmann::ordered_json parse_json_ordered(std::string_view text, const JsonOptions& opt = {});
nlohmann::json parse_json(std::string_view text, const JsonOptions& opt = {});

// A short, single-line rendering of a value for error messages (at most max_chars characters).
std::string json_excerpt(const nlohmann::ordered_json& v, size_t max_chars = 60);
std::string json_excerpt(const nlohmann::json& v, size_t max_chars = 60);

}  // namespace dsa
