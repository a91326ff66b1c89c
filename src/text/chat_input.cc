// Tokenizer discovery and prompt building from plain text or a messages JSON file.
#include "text/chat_input.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "base/files.h"
#include "io/json.h"
#include "text/chat_encoding.h"


namespace dsa::text {

namespace {

// The repository root: the source dir given by CMake, else this source file's location, else the
// current directory.
std::filesystem::path repo_root() {
#ifdef DSA_SOURCE_DIR
  return std::filesystem::path(DSA_SOURCE_DIR);
#endif
  std::filesystem::path here(__FILE__);
  if (here.is_absolute()) return here.parent_path().parent_path().parent_path();
  return std::filesystem::current_path();
}

}  // namespace

std::string default_tokenizer_path(const std::string& model_dir) {
  std::vector<std::string> tried;
  if (const char* env = std::getenv("DSA_TOKENIZER"); env != nullptr && *env != '\0') {
    DSA_CHECK(std::filesystem::exists(env), "DSA_TOKENIZER={} does not exist", env);
    return env;
  }
  tried.push_back("$DSA_TOKENIZER (unset)");
  const auto repo = repo_root() / "third_party" / "tokenizer" / "tokenizer.json";
  if (std::filesystem::exists(repo)) return repo.string();
  tried.push_back(repo.string());
  if (!model_dir.empty()) {
    const auto m = std::filesystem::path(model_dir) / "tokenizer.json";
    if (std::filesystem::exists(m)) return m.string();
    tried.push_back(m.string());
  }
  std::string list;
  for (const auto& t : tried) list += "\n  " + t;
  DSA_FAIL("no tokenizer.json found (run scripts/fetch_tokenizer.sh or pass --tokenizer); looked at:{}", list);
}

std::vector<int32_t> encode_rendered(const Tokenizer& tok, const RenderedPrompt& prompt, bool special_in_content) {
  return special_in_content ? tok.encode(prompt.text) : tok.encode_marked(prompt.text, prompt.plain);
}

std::vector<int32_t> encode_chat(const Tokenizer& tok, const OrderedJson& messages, const EncodeOptions& opt,
                                 bool special_in_content) {
  return encode_rendered(tok, render_messages(messages, opt), special_in_content);
}

std::vector<int32_t> encode_prompt(const Tokenizer& tok, const std::string& user_text, bool thinking,
                                   bool special_in_content) {
  OrderedJson msgs = OrderedJson::array();
  msgs.push_back({{"role", "user"}, {"content", user_text}});
  return encode_chat(tok, msgs, {.thinking = thinking}, special_in_content);
}

RenderedPrompt messages_json_to_rendered(const std::string& json_text, bool thinking) {
  OrderedJson j;
  try {
    j = parse_json_exact(json_text);
  } catch (const std::exception& e) {
    DSA_FAIL("messages file is not valid JSON: {}", e.what());
  }
  OrderedJson msgs;
  if (j.is_array()) {
    msgs = j;
  } else if (j.is_object() && j.contains("messages")) {
    for (auto it = j.begin(); it != j.end(); ++it)
      DSA_CHECK(it.key() == "messages" || it.key() == "tools" || it.key() == "response_format",
                "messages file: unknown field '{}' (expected messages, tools, response_format)", it.key());
    msgs = j["messages"];
    if (j.contains("tools")) msgs = attach_tools(msgs, j["tools"]);
    if (j.contains("response_format")) msgs = attach_response_format(msgs, j["response_format"]);
  } else {
    DSA_FAIL("messages JSON must be a list of messages or an object with a 'messages' list");
  }
  return render_messages(msgs, {.thinking = thinking});
}

std::string messages_json_to_prompt(const std::string& json_text, bool thinking) {
  return messages_json_to_rendered(json_text, thinking).text;
}

std::vector<int32_t> encode_messages_json(const Tokenizer& tok, const std::string& json_text, bool thinking,
                                          bool special_in_content) {
  return encode_rendered(tok, messages_json_to_rendered(json_text, thinking), special_in_content);
}

std::vector<int32_t> encode_messages_file(const Tokenizer& tok, const std::string& json_path, bool thinking,
                                          bool special_in_content) {
  const std::string text = read_text_file(json_path, 256u << 20, "messages file");  // no FIFO, bounded
  try {
    return encode_messages_json(tok, text, thinking, special_in_content);
  } catch (const dsa::Error& e) {
    throw dsa::Error(json_path + ": " + e.what());
  }
}

}  // namespace dsa::text
