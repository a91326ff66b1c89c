// Shared helpers for the text_* tests: locating the tokenizer and reading fixtures.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

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

// Documents of a corpus file ("DOC name bytes\n" + text + "\n", xz-compressed), read through xz.
struct Doc {
  std::string name, text;
};
inline bool load_docs(const std::string& xz_path, std::vector<Doc>* docs, std::string* err) {
  const std::string cmd = "xz -dc '" + xz_path + "'";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) {
    *err = "cannot run " + cmd;
    return false;
  }
  std::string data;
  char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) data.append(buf, n);
  if (pclose(p) != 0 || data.empty()) {
    *err = "'" + cmd + "' failed (is xz-utils installed?)";
    return false;
  }
  size_t i = 0;
  while (i < data.size()) {
    const size_t nl = data.find('\n', i);
    std::istringstream hdr(data.substr(i, nl - i));
    std::string tag, name;
    size_t len = 0;
    hdr >> tag >> name >> len;
    if (tag != "DOC" || nl == std::string::npos || nl + 1 + len > data.size()) {
      *err = "corrupt corpus at byte " + std::to_string(i);
      return false;
    }
    docs->push_back({name, data.substr(nl + 1, len)});
    i = nl + 1 + len + 1;
  }
  return true;
}

// Output of a shell command (e.g. xz -dc), "" on failure.
inline std::string read_command(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return {};
  std::string data;
  char buf[1 << 16];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) data.append(buf, n);
  return pclose(p) == 0 ? data : std::string();
}

#define DSA_REQUIRE_TOKENIZER(tok)                                                           \
  const ::dsa::text::Tokenizer* tok = ::dsa::text::testing::shared_tokenizer();             \
  if (tok == nullptr) GTEST_SKIP() << "tokenizer.json missing: run scripts/fetch_tokenizer.sh"

}  // namespace dsa::text::testing
