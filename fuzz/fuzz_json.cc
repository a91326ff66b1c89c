// libFuzzer target: untrusted JSON through every consumer — the one parse entry point (ordered and
// plain), chat and completion request bodies, config.json, safetensors headers (via an in-memory
// file) and messages files. Seeds include inputs far beyond 4 KB, nested and wide (scripts/fuzz.sh).
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "base/error.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "text/chat_input.h"
#include "text/tokenizer.h"
// The request validation lives in the app (not a library): compiled in directly.
#include "../src/app/http_request.cc"

static const dsa::text::Tokenizer& tok() {
  static dsa::text::Tokenizer t = [] {
    const char* env = std::getenv("DSA_TOKENIZER");
    return dsa::text::Tokenizer::from_file(env ? env : DSA_SOURCE_DIR "/third_party/tokenizer/tokenizer.json");
  }();
  return t;
}

// A safetensors file whose header is the input, followed by 64 data bytes, in a memfd.
static void safetensors_header(const std::string& s) {
  static const int fd = memfd_create("fuzz_safetensors", 0);
  if (fd < 0) return;
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[size_t(i)] = char((uint64_t(s.size()) >> (8 * i)) & 0xff);
  file += s;
  file += std::string(64, '\x3c');
  if (ftruncate(fd, 0) != 0 || pwrite(fd, file.data(), file.size(), 0) != ssize_t(file.size())) return;
  try {
    auto f = dsa::SafetensorsFile::open("/proc/self/fd/" + std::to_string(fd));
    for (const auto& [name, e] : f->tensors())
      if (e.nbytes > 64) std::abort();  // every accepted tensor lies inside the 64 data bytes
  } catch (const dsa::Error&) {
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  dsa::app::ApiLimits lim;
  lim.max_prompt_tokens = 1 << 20;
  try {
    const auto j = dsa::parse_json_ordered(s);
    try {
      (void)dsa::app::parse_chat_request(j, tok(), lim);
    } catch (const dsa::app::ApiError&) {
    } catch (const dsa::Error&) {
    }
    try {
      (void)dsa::app::parse_completion_request(j, tok(), lim);
    } catch (const dsa::app::ApiError&) {
    } catch (const dsa::Error&) {
    }
  } catch (const dsa::Error&) {
  }
  try {
    (void)dsa::ModelConfig::from_json(dsa::parse_json(s));
  } catch (const dsa::Error&) {
  }
  try {
    (void)dsa::text::messages_json_to_prompt(s, size % 2 == 0);
  } catch (const dsa::Error&) {
  }
  safetensors_header(s);
  return 0;
}
