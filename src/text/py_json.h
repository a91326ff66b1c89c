// JSON text exactly as Python's json.dumps(value, ensure_ascii=False) writes it (", " and ": "
// separators, key order kept, float repr), as the DeepSeek chat templates require.
#pragma once
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "io/json.h"

namespace dsa::text {

using OrderedJson = nlohmann::ordered_json;

std::string py_json_dumps(const OrderedJson& v);

// Parses JSON text as Python's json.loads does for what the templates print: integers of any size
// stay exact (beyond 64 bits they are held as a binary value of subtype kBigIntSubtype carrying the
// decimal digits, which py_json_dumps prints back). It is io/json.h's parser (linear time, depth
// limited): a duplicate key is an error (Python keeps the last value; dsa refuses the ambiguity).
// Nesting deeper than max_depth is an error. Throws dsa::Error on bad JSON.
inline constexpr uint64_t kBigIntSubtype = kJsonBigIntSubtype;
OrderedJson parse_json_exact(std::string_view text, size_t max_depth = 256);
// The digits of a big integer held by parse_json_exact, or "" if v is not one.
std::string big_int_digits(const OrderedJson& v);
// A JSON string literal for s (s must be UTF-8; it is copied unescaped apart from ", \ and controls).
std::string py_json_quote(std::string_view s);
// Python repr() of a finite double ("1.0", "1e-05", "1e+16"); NaN/Infinity as Python's json writes them.
std::string py_float_repr(double d);

}  // namespace dsa::text
