// `dsa serve`: OpenAI-compatible HTTP server over the continuous-batching engine; SIGTERM/SIGINT
// stop accepting, drain in-flight requests (bounded by --drain-timeout) and exit 0.
#include <fmt/format.h>
#include <sys/resource.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <thread>

#include "app/commands.h"
#include "ops/backends.h"
#include "app/http_api.h"
#include "app/http_server.h"
#include "runtime/engine.h"
#include "text/chat_input.h"

namespace dsa::app {

namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_stop_signal(int) { g_stop = true; }

// Each connection is a descriptor: use the hard limit, not the usual soft 1024.
void raise_fd_limit() {
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

struct ServeArgs {
  std::string model, host = "127.0.0.1", tokenizer, name;
  int port = 8000;
  EngineOptions eng;
  HttpOptions http;
  HttpServerOptions server;
  bool reference = false;
  std::string backend;
};

}  // namespace

void add_serve_command(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  auto* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server (continuous batching)");
  cmd->add_option("-m,--model", a->model, "Model directory")->required();
  cmd->add_option("--host", a->host, "Address to listen on");
  cmd->add_option("--port", a->port, "Port (0 = pick a free one and print it)")->check(CLI::Range(0, 65535));
  cmd->add_option("--tokenizer", a->tokenizer, "tokenizer.json (default: $DSA_TOKENIZER, third_party/tokenizer, or the model dir)");
  cmd->add_option("--served-model-name", a->name, "Model id reported by /v1/models (default: the directory name)");
  cmd->add_option("--kv-pages", a->eng.kv_pages, "KV cache budget in pages")->check(CLI::Range(int64_t(1), int64_t(1) << 24));
  cmd->add_option("--page-size", a->eng.page_size, "Tokens per KV page")->check(CLI::Range(int64_t(1), int64_t(4096)));
  cmd->add_option("--max-batch", a->eng.max_batch, "Sequences decoded together at most")->check(CLI::Range(int64_t(1), int64_t(4096)));
  cmd->add_option("--prefill-chunk", a->eng.prefill_chunk, "Prompt tokens per prefill step")->check(CLI::Range(int64_t(2), int64_t(1) << 20));
  cmd->add_option_function<std::string>(
         "--prefill-attention", [a](const std::string& v) { a->eng.absorbed_prefill = v == "absorbed"; },
         "Prefill attention: mha (the reference's path, default) or absorbed (decode's MQA path, other rounding)")
      ->check(CLI::IsMember({"mha", "absorbed"}));
  cmd->add_option("--max-queue", a->eng.max_queue, "Waiting requests beyond this get 503")->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  cmd->add_option("--prefix-cache", a->eng.prefix_cache_entries, "Prompts kept for prefix reuse (0 = off)")->check(CLI::Range(int64_t(0), int64_t(4096)));
  cmd->add_option("--max-prompt-tokens", a->http.limits.max_prompt_tokens, "Longest accepted prompt")->check(CLI::Range(int64_t(1), int64_t(1) << 30));
  cmd->add_option("--max-tokens-limit", a->http.limits.max_tokens_limit, "Largest accepted max_tokens")->check(CLI::Range(int64_t(1), int64_t(1) << 30));
  cmd->add_option("--default-max-tokens", a->http.limits.default_max_tokens, "Chat max_tokens when the request gives none")->check(CLI::Range(int64_t(1), int64_t(1) << 30));
  cmd->add_option("--max-body-bytes", a->server.max_body_bytes, "Largest accepted request body, however it is framed (413 beyond)")
      ->check(CLI::Range(size_t(1), size_t(1) << 34));
  cmd->add_option("--header-timeout", a->server.header_timeout_s, "Seconds a request head may take once it starts (408 beyond)")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--body-timeout", a->server.body_timeout_s, "Seconds a request body may take (408 beyond)")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--idle-timeout", a->server.idle_timeout_s, "Seconds an idle keep-alive connection is kept")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--write-timeout", a->server.write_timeout_s, "Seconds a write to a client that does not read may take")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--drain-timeout", a->server.drain_timeout_s,
                  "On SIGTERM: seconds in-flight requests may still run before they are ended (streams with an error event)")
      ->check(CLI::Range(0.0, 86400.0));
  cmd->add_option("--max-connections", a->server.max_connections, "Open connections beyond this are closed at once")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--http-threads", a->server.handler_threads, "Threads that parse and tokenise requests (default 4)")
      ->check(CLI::Range(1, 256));
  cmd->add_flag("--reference", a->reference, "Use the scalar reference ops (= --backend ref)");
  cmd->add_option("--backend", a->backend, "Op backend (default: the fastest available)");
  cmd->callback([a] {
    auto log = [](const std::string& s) { fmt::print(stderr, "[dsa] {}\n", s); };
    const ops::OpTable& ops = ops::select_backend(a->reference ? "ref" : a->backend);
    auto model = Model::load(a->model, ops, log);
    const std::string tpath = a->tokenizer.empty() ? text::default_tokenizer_path(a->model) : a->tokenizer;
    const text::Tokenizer tok = text::Tokenizer::from_file(tpath);
    a->http.model_name = !a->name.empty() ? a->name : std::filesystem::path(a->model).lexically_normal().filename().string();
    if (a->http.model_name.empty()) a->http.model_name = std::filesystem::path(a->model).parent_path().filename().string();
    Engine engine(*model, a->eng);
    HttpApi api(engine, tok, int32_t(model->config().eos_token_id), a->http);
    a->server.host = a->host;
    a->server.port = a->port;
    raise_fd_limit();
    HttpServer svr(a->server);
    api.install(svr);
    svr.listen();  // a port in use is an error (no SO_REUSEPORT)
    const int port = svr.port();
    std::signal(SIGPIPE, SIG_IGN);
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    std::atomic<bool> finished{false};
    std::thread watcher([&] {
      while (!g_stop && !finished) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (g_stop) {
        log(fmt::format("signal received: no new connections, draining in-flight requests (up to {} s)",
                        a->server.drain_timeout_s));
        api.set_draining(true);
        svr.shutdown();  // run() returns once every connection has finished or been ended
      }
    });
    log(fmt::format("model {} ({} layers), KV {} pages x {} tokens ({:.1f} MB), max batch {}", a->http.model_name,
                    model->config().num_hidden_layers, a->eng.kv_pages, a->eng.page_size,
                    engine.kv().bytes() / 1e6, a->eng.max_batch));
    fmt::print("listening on http://{}:{}\n", a->host, port);
    std::fflush(stdout);
    svr.run();
    finished = true;
    watcher.join();
    engine.shutdown();  // before the server goes away: no engine callback reaches it afterwards
    log("stopped");
  });
}

}  // namespace dsa::app
