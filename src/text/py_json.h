// JSON text exactly as Python's json.dumps(value, ensure_ascii=False) writes it (", " and ": "
// separators, key order kept, float repr), as the DeepSeek chat templates require.
#pragma once
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace dsa::text {

using OrderedJson = nlohmann::ordered_json;

std::string py_json_dumps(const OrderedJson& v);
// A JSON string literal for s (s must be UTF-8; it is copied unescaped apart from ", \ and controls).
std::string py_json_quote(std::string_view s);
// Python repr() of a finite double ("1.0", "1e-05", "1e+16"); NaN/Infinity as Python's json writes them.
std::string py_float_repr(double d);

}  // namespace dsa::text
