// libFuzzer target: encode arbitrary bytes (valid UTF-8 must round-trip and give the same ids through
// both pre-tokenizer splitters, invalid must throw dsa::Error), decode arbitrary ids and stream them
// through the incremental decoder.
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "base/error.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

static const dsa::text::Tokenizer& tok() {
  static dsa::text::Tokenizer t = [] {
    const char* env = std::getenv("DSA_TOKENIZER");
    return dsa::text::Tokenizer::from_file(env ? env : DSA_SOURCE_DIR "/third_party/tokenizer/tokenizer.json");
  }();
  return t;
}

// The same tokenizer splitting through the PCRE2 chain: both splitters must give the same ids.
static const dsa::text::Tokenizer& regex_tok() {
  static dsa::text::Tokenizer t = [] {
    const char* env = std::getenv("DSA_TOKENIZER");
    return dsa::text::Tokenizer::from_file(env ? env : DSA_SOURCE_DIR "/third_party/tokenizer/tokenizer.json",
                                           {.regex_pre_tokenizer = true});
  }();
  return t;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  const auto& t = tok();
  if (dsa::text::is_valid_utf8(s)) {
    const std::vector<int32_t> ids = t.encode(s);
    if (t.decode(ids) != s) std::abort();
    if (regex_tok().encode(s) != ids) std::abort();
    // Plain ranges (message text): the decode is unchanged; no range means encode().
    const std::vector<dsa::text::TextRange> none;
    if (t.encode_marked(s, none) != ids) std::abort();
    const std::vector<dsa::text::TextRange> half = {{0, s.size() / 2}};
    if (t.decode(t.encode_marked(s, half)) != s) std::abort();
    dsa::text::IncrementalDecoder dec(t);
    std::string streamed;
    for (int32_t id : ids) streamed += dec.push(id);
    streamed += dec.flush();
    if (streamed != s) std::abort();
  } else {
    try {
      t.encode(s);
      std::abort();  // invalid UTF-8 must be rejected
    } catch (const dsa::Error&) {
    }
  }
  // Bytes reinterpreted as ids (including invalid ones).
  std::vector<int32_t> ids(size / 4);
  if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * 4);
  for (auto& id : ids) id = static_cast<int32_t>(static_cast<uint32_t>(id) % 130000u);
  (void)t.decode(ids, size % 2 == 0);
  dsa::text::IncrementalDecoder dec(t);
  std::string out;
  for (int32_t id : ids) out += dec.push(id);
  out += dec.flush();
  if (!dsa::text::is_valid_utf8(out)) std::abort();
  return 0;
}
