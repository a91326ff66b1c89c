// UTF-8 helpers for the text module: strict validation and complete-character prefix detection.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace dsa::text {

// Length of the valid UTF-8 sequence starting at s[0] (1..4), 0 if s starts with an invalid
// sequence, or -1 if s is a valid but incomplete prefix of a character (needs more bytes).
int utf8_sequence_length(std::string_view s);

// True if s is entirely well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF).
bool is_valid_utf8(std::string_view s);

// Byte offset of the first invalid byte, or s.size() if valid.
size_t first_invalid_utf8(std::string_view s);

// Appends the UTF-8 encoding of code point cp (must be <= 0x10FFFF) to out.
void append_utf8(std::string& out, char32_t cp);

}  // namespace dsa::text
