// Shared helpers for the text_* tests: locating the tokenizer and reading fixtures.
#pragma once
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "text/tokenizer.h"

namespace dsa::text::testing {

// The V3.2 tokenizer (scripts/fetch_tokenizer.sh), or nullptr when it is not installed.
inline const Tokenizer* shared_tokenizer() {
  static std::unique_ptr<Tokenizer> tok = [] {
    std::string path = DSA_SOURCE_DIR "/third_party/tokenizer/tokenizer.json";
    if (const char* env = std::getenv("DSA_TOKENIZER")) path = env;
    if (!std::filesystem::exists(path)) return std::unique_ptr<Tokenizer>();
    return std::make_unique<Tokenizer>(Tokenizer::from_file(path));
  }();
  return tok.get();
}

inline std::string read_text_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

#define DSA_REQUIRE_TOKENIZER(tok)                                                           \
  const ::dsa::text::Tokenizer* tok = ::dsa::text::testing::shared_tokenizer();             \
  if (tok == nullptr) GTEST_SKIP() << "tokenizer.json missing: run scripts/fetch_tokenizer.sh"

}  // namespace dsa::text::testing
