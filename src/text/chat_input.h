// Small public text API for the app: find the tokenizer, turn a user prompt or a messages file into
// V3.2 prompt token ids.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "text/py_json.h"
#include "text/tokenizer.h"

namespace dsa::text {

// Tokenizer path: $DSA_TOKENIZER if set, else <repo>/third_party/tokenizer/tokenizer.json if it
// exists, else <model_dir>/tokenizer.json if model_dir is given and has one. Throws dsa::Error
// naming every place it looked when none exists.
std::string default_tokenizer_path(const std::string& model_dir = "");

struct RenderedPrompt;
struct EncodeOptions;

// Prompt ids of rendered messages. Message text is plain text (a special-token string in it is
// ordinary characters) unless special_in_content: then the whole prompt text is tokenized as one,
// as HF `tokenizers` would tokenize the official encoder's string (only for trusted content).
std::vector<int32_t> encode_rendered(const Tokenizer& tok, const RenderedPrompt& prompt, bool special_in_content);
std::vector<int32_t> encode_chat(const Tokenizer& tok, const OrderedJson& messages, const EncodeOptions& opt,
                                 bool special_in_content = false);

// One user turn: BOS <｜User｜>text<｜Assistant｜> + <think> (thinking) or </think> (chat).
std::vector<int32_t> encode_prompt(const Tokenizer& tok, const std::string& user_text, bool thinking,
                                   bool special_in_content = false);

// A JSON file holding either a list of messages or {"messages": [...], "tools": [...],
// "response_format": {...}} (tools and response_format are attached to the first system/developer
// message). Integers of any size stay exact. Throws dsa::Error on unreadable/bad files.
std::vector<int32_t> encode_messages_file(const Tokenizer& tok, const std::string& json_path, bool thinking,
                                          bool special_in_content = false);

// Same, for the JSON text itself.
std::vector<int32_t> encode_messages_json(const Tokenizer& tok, const std::string& json_text, bool thinking,
                                          bool special_in_content = false);
RenderedPrompt messages_json_to_rendered(const std::string& json_text, bool thinking);
std::string messages_json_to_prompt(const std::string& json_text, bool thinking);

}  // namespace dsa::text
