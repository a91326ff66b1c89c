// `dsa chat`: interactive terminal chat over the engine: streaming output, history, /think toggle
// (reasoning shown dimmed, or tagged when stdout is not a terminal), /reset, /exit.
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "app/commands.h"
#include "ops/backends.h"
#include "app/http_generation.h"
#include "runtime/engine.h"
#include "text/chat_encoding.h"
#include "text/chat_input.h"

namespace dsa::app {

namespace {

struct ChatArgs {
  std::string model, tokenizer, system;
  bool thinking = false;
  int64_t max_tokens = 256;
  SamplingParams sampling;
  std::string backend;
};

void out(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

}  // namespace

void add_chat_command(CLI::App& app) {
  auto a = std::make_shared<ChatArgs>();
  auto* cmd = app.add_subcommand("chat", "Interactive chat in the terminal (/think, /reset, /exit)");
  cmd->add_option("-m,--model", a->model, "Model directory")->required();
  cmd->add_option("--tokenizer", a->tokenizer, "tokenizer.json (default: $DSA_TOKENIZER, third_party/tokenizer, or the model dir)");
  cmd->add_option("--system", a->system, "System prompt");
  cmd->add_flag("--thinking", a->thinking, "Start in thinking mode (toggle with /think)");
  cmd->add_option("-n,--max-tokens", a->max_tokens, "Tokens per reply at most")->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  cmd->add_option("--temperature", a->sampling.temperature, "0 = greedy");
  cmd->add_option("--top-p", a->sampling.top_p, "Nucleus sampling mass (1 = off)");
  cmd->add_option("--seed", a->sampling.seed, "Sampling seed");
  cmd->add_option("--backend", a->backend, "Op backend (default: the fastest available)");
  cmd->callback([a] {
    auto log = [](const std::string& s) { fmt::print(stderr, "[dsa] {}\n", s); };
    auto model = Model::load(a->model, ops::select_backend(a->backend), log);
    const std::string tpath = a->tokenizer.empty() ? text::default_tokenizer_path(a->model) : a->tokenizer;
    const text::Tokenizer tok = text::Tokenizer::from_file(tpath);
    EngineOptions eo;
    eo.kv_pages = 512;
    eo.max_batch = 1;
    eo.prewarm_kv = false;
    Engine engine(*model, eo);
    const bool tty_in = isatty(0), tty_out = isatty(1);
    const std::string dim = tty_out ? "\x1b[2m" : "", undim = tty_out ? "\x1b[0m" : "";
    text::OrderedJson history = text::OrderedJson::array();
    auto reset = [&] {
      history = text::OrderedJson::array();
      if (!a->system.empty()) history.push_back({{"role", "system"}, {"content", a->system}});
    };
    reset();
    if (tty_in) out("dsa chat — /think toggles thinking mode, /reset clears the history, /exit quits\n");
    std::string line;
    for (;;) {
      if (tty_in) out(fmt::format("{}> ", a->thinking ? "[think] " : ""));
      if (!std::getline(std::cin, line)) break;
      if (line.empty()) continue;
      if (line == "/exit" || line == "/quit") break;
      if (line == "/reset") {
        reset();
        out("[history cleared]\n");
        continue;
      }
      if (line == "/think") {
        a->thinking = !a->thinking;
        out(fmt::format("[thinking mode {}]\n", a->thinking ? "on" : "off"));
        continue;
      }
      if (line[0] == '/') {
        out("[commands: /think /reset /exit]\n");
        continue;
      }
      text::OrderedJson msgs = history;
      msgs.push_back({{"role", "user"}, {"content", line}});
      std::vector<int32_t> prompt;
      try {
        prompt = text::encode_chat(tok, msgs, {.thinking = a->thinking});  // typed text stays plain text
      } catch (const std::exception& e) {
        out(fmt::format("[error: {}]\n", e.what()));
        continue;
      }
      auto gen = std::make_shared<Generation>(tok, true, a->thinking, std::vector<std::string>{});
      GenRequest req;
      req.prompt = std::move(prompt);
      req.max_tokens = a->max_tokens;
      req.sampling = a->sampling;
      req.stop_ids = {int32_t(model->config().eos_token_id)};
      req.on_token = [gen](int32_t t) { return gen->on_token(t); };
      req.on_done = [gen](const GenResult& r) { gen->on_done(r); };
      try {
        engine.submit(std::move(req));
      } catch (const std::exception& e) {
        out(fmt::format("[error: {}]\n", e.what()));
        continue;
      }
      bool in_reasoning = false, any_content = false;
      for (;;) {
        gen->wait(std::chrono::milliseconds(100));
        const bool finished = gen->done();
        const TextDelta d = gen->take_delta();
        if (!d.reasoning.empty()) {
          if (!in_reasoning) out(dim + (tty_out ? "" : "[reasoning] "));
          in_reasoning = true;
          out(d.reasoning);
        }
        if (!d.content.empty()) {
          if (in_reasoning) out(undim + "\n" + (tty_out ? "" : "[answer] "));
          in_reasoning = false;
          any_content = true;
          out(d.content);
        }
        if (finished) break;
      }
      if (in_reasoning) out(undim);
      const GenResult r = gen->result();
      const FinalMessage m = gen->final_message();
      for (const auto& c : m.tool_calls) out(fmt::format("\n[tool call {}({})]", c.name, c.arguments));
      (void)any_content;
      out(r.reason == FinishReason::kError ? fmt::format("\n[error: {}]\n", r.error)
                                           : fmt::format("\n{}[{} tokens, {}]{}\n", dim, r.generated, m.finish_reason, undim));
      history = msgs;
      text::OrderedJson reply = {{"role", "assistant"}, {"content", m.content}};
      if (a->thinking) reply["reasoning_content"] = m.reasoning_content;
      history.push_back(reply);
    }
    engine.shutdown();
  });
}

}  // namespace dsa::app
