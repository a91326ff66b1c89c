// `dsa tokenize`: encode text or a file to token ids, decode ids back, using the V3.2 tokenizer.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "base/error.h"
#include "text/chat_input.h"
#include "text/tokenizer.h"

namespace {

struct TokenizeOptions {
  std::string tokenizer_path, text, file, decode, messages;
  bool lines = false, no_special = false, thinking = false, skip_special = false, special_in_content = false;
};

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  DSA_CHECK(f.good(), "cannot open '{}'", path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void print_ids(const std::vector<int32_t>& ids) {
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line += ' ';
    line += std::to_string(ids[i]);
  }
  std::puts(line.c_str());
}

std::vector<int32_t> parse_id_list(const std::string& s) {
  std::vector<int32_t> ids;
  std::string tok;
  std::istringstream in(s);
  while (std::getline(in, tok, ',')) {
    size_t a = tok.find_first_not_of(" \t"), b = tok.find_last_not_of(" \t");
    DSA_CHECK(a != std::string::npos, "--decode: empty entry in '{}'", s);
    tok = tok.substr(a, b - a + 1);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(tok, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    DSA_CHECK(used == tok.size() && v >= 0 && v < (1LL << 31), "--decode: '{}' is not a token id", tok);
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

int run_tokenize(const TokenizeOptions& o) {
  using namespace dsa::text;
  const std::string path = o.tokenizer_path.empty() ? default_tokenizer_path() : o.tokenizer_path;
  const Tokenizer tok = Tokenizer::from_file(path);
  if (!o.decode.empty()) {
    const std::vector<int32_t> ids = parse_id_list(o.decode);
    for (int32_t id : ids) DSA_CHECK(tok.is_valid_id(id), "--decode: no token with id {}", id);
    std::fwrite(tok.decode(ids, o.skip_special).data(), 1, tok.decode(ids, o.skip_special).size(), stdout);
    std::fputc('\n', stdout);
    return 0;
  }
  if (!o.messages.empty()) {
    print_ids(encode_messages_file(tok, o.messages, o.thinking, o.special_in_content));
    return 0;
  }
  std::string input;
  if (!o.file.empty()) {
    input = o.file == "-" ? std::string(std::istreambuf_iterator<char>(std::cin), {}) : read_all(o.file);
  } else {
    input = o.text;
  }
  if (o.lines) {
    std::istringstream in(input);
    for (std::string line; std::getline(in, line);) print_ids(tok.encode(line, !o.no_special));
  } else {
    print_ids(tok.encode(input, !o.no_special));
  }
  return 0;
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto opts = std::make_shared<TokenizeOptions>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Encode text to token ids, or decode ids to text");
  cmd->add_option("--tokenizer", opts->tokenizer_path,
                  "tokenizer.json (default: $DSA_TOKENIZER, else third_party/tokenizer/tokenizer.json)");
  auto* text = cmd->add_option("--text", opts->text, "text to encode");
  auto* file = cmd->add_option("--file", opts->file, "file to encode ('-' for stdin)");
  auto* dec = cmd->add_option("--decode", opts->decode, "comma-separated ids to decode, e.g. 1,2,3");
  auto* msgs = cmd->add_option("--messages", opts->messages,
                               "JSON file of chat messages (list, or {messages, tools, response_format}) to encode as a V3.2 prompt");
  cmd->add_flag("--thinking", opts->thinking, "with --messages: thinking mode (default chat)");
  cmd->add_flag("--special-in-content", opts->special_in_content,
                "with --messages: special-token strings in message text become special tokens (default: plain text)");
  cmd->add_flag("--lines", opts->lines, "encode each line separately (one id list per line)");
  cmd->add_flag("--no-special", opts->no_special, "treat special-token strings in the input as text");
  cmd->add_flag("--skip-special", opts->skip_special, "with --decode: drop special tokens");
  text->excludes(file)->excludes(dec)->excludes(msgs);
  file->excludes(dec)->excludes(msgs);
  dec->excludes(msgs);
  cmd->callback([opts, cmd]() {
    if (opts->text.empty() && opts->file.empty() && opts->decode.empty() && opts->messages.empty() &&
        cmd->count("--text") == 0) {
      throw CLI::ValidationError("tokenize", "give one of --text, --file, --decode, --messages");
    }
    try {
      run_tokenize(*opts);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "dsa tokenize: error: %s\n", e.what());
      throw CLI::RuntimeError(1);
    }
  });
}
