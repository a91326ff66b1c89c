// Small non-cryptographic hashes for seeds, fingerprints and data splits: 64-bit FNV-1a over
// bytes or little-endian integers, and splitmix64's finaliser. Their values are part of file
// formats and fixtures (shard tokenizer hashes, make-model weights): never change them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace dsa {

inline constexpr uint64_t kFnv1aOffset = 0xcbf29ce484222325ULL;

inline uint64_t fnv1a_byte(uint64_t h, uint8_t b) { return (h ^ b) * 0x100000001b3ULL; }

// The bytes of v, least significant first.
template <class U>
inline uint64_t fnv1a_le(uint64_t h, U v) {
  for (size_t k = 0; k < sizeof(U); ++k) h = fnv1a_byte(h, uint8_t(uint64_t(v) >> (8 * k)));
  return h;
}

inline uint64_t fnv1a_bytes(uint64_t h, std::string_view s) {
  for (char c : s) h = fnv1a_byte(h, uint8_t(c));
  return h;
}

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

}  // namespace dsa
