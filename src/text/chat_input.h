// Small public text API for the app: find the tokenizer, turn a user prompt or a messages file into
// V3.2 prompt token ids.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace dsa::text {

// Tokenizer path: $DSA_TOKENIZER if set, else <repo>/third_party/tokenizer/tokenizer.json if it
// exists, else <model_dir>/tokenizer.json if model_dir is given and has one. Throws dsa::Error
// naming every place it looked when none exists.
std::string default_tokenizer_path(const std::string& model_dir = "");

// One user turn: BOS <｜User｜>text<｜Assistant｜> + <think> (thinking) or </think> (chat).
std::vector<int32_t> encode_prompt(const Tokenizer& tok, const std::string& user_text, bool thinking);

// A JSON file holding either a list of messages or {"messages": [...], "tools": [...]} (tools are
// attached to the first system/developer message). Throws dsa::Error on unreadable/bad files.
std::vector<int32_t> encode_messages_file(const Tokenizer& tok, const std::string& json_path, bool thinking);

// Same, for the JSON text itself.
std::vector<int32_t> encode_messages_json(const Tokenizer& tok, const std::string& json_text, bool thinking);
std::string messages_json_to_prompt(const std::string& json_text, bool thinking);

}  // namespace dsa::text
