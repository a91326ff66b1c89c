// `dsa run`: load a model, prefill a prompt, generate, print ids and speed.
#include <fmt/format.h>

#include <sstream>

#include "app/commands.h"
#include "ops/backends.h"
#include "runtime/session.h"
#include "text/chat_input.h"
#include "text/completion_parser.h"

namespace dsa::app {

namespace {

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (...) {
      DSA_FAIL("--prompt-ids: \"{}\" is not an integer", item);
    }
    DSA_CHECK(used == item.size() || item.find_first_not_of(" \t", used) == std::string::npos,
              "--prompt-ids: \"{}\" is not an integer", item);
    DSA_CHECK(v >= 0 && v <= INT32_MAX, "--prompt-ids: {} is out of range", v);
    ids.push_back(int32_t(v));
  }
  return ids;
}

struct RunArgs {
  std::string model, prompt_ids, prompt, messages, tokenizer, dump_regex, dump_file = "dump.safetensors";
  bool thinking = false;
  bool special_in_content = false;
  int64_t n = 32, chunk = kDefaultPrefillChunk;
  SamplingParams sampling;
  bool reference = false, ignore_eos = false;
  std::string backend, prefill_attention = "mha";
};

}  // namespace

void add_run_command(CLI::App& app) {
  auto a = std::make_shared<RunArgs>();
  auto* cmd = app.add_subcommand("run", "Generate from a prompt");
  cmd->add_option("-m,--model", a->model, "Model directory (config.json + safetensors)")->required();
  auto* ids = cmd->add_option("--prompt-ids", a->prompt_ids, "Prompt as comma-separated token ids");
  auto* txt = cmd->add_option("--prompt", a->prompt, "A user message (encoded with the V3.2 chat template)");
  auto* msg = cmd->add_option("--messages", a->messages, "A JSON file of chat messages (optionally with tools)");
  ids->excludes(txt)->excludes(msg);
  txt->excludes(msg);
  cmd->add_flag("--thinking", a->thinking, "Thinking mode (the prompt ends in <think>); default chat mode");
  cmd->add_flag("--special-in-content", a->special_in_content,
                "Let special-token strings in message text (--prompt, --messages) become special tokens "
                "(default: they are plain text, so a message cannot forge turns)");
  cmd->add_option("--tokenizer", a->tokenizer, "tokenizer.json (default: $DSA_TOKENIZER, third_party/tokenizer, or the model dir)");
  cmd->add_option("-n,--max-tokens", a->n, "Tokens to generate")->check(CLI::Range(int64_t(0), int64_t(1) << 30));
  cmd->add_option("--temperature", a->sampling.temperature, "0 = greedy");
  cmd->add_option("--top-k", a->sampling.top_k, "Keep the k most likely tokens (0 = off)");
  cmd->add_option("--top-p", a->sampling.top_p, "Nucleus sampling mass (1 = off)");
  cmd->add_option("--seed", a->sampling.seed, "Sampling seed");
  cmd->add_option("--prefill-chunk", a->chunk, "Prompt tokens per prefill call (0 = one piece, memory quadratic in the prompt); any chunking gives the same result");
  cmd->add_option("--prefill-attention", a->prefill_attention,
                  "Prefill attention: mha (the reference's path, default) or absorbed (decode's MQA path, "
                  "as production kernels do; other rounding)")
      ->check(CLI::IsMember({"mha", "absorbed"}));
  cmd->add_option("--dump", a->dump_regex, "Write intermediates whose names match this regex (e.g. '^l0\\.')");
  cmd->add_option("--dump-file", a->dump_file, "Where --dump writes (safetensors)");
  cmd->add_flag("--reference", a->reference, "Use the scalar reference ops for everything (= --backend ref)");
  cmd->add_option("--backend", a->backend, "Op backend (default: the fastest available)");
  cmd->add_flag("--ignore-eos", a->ignore_eos, "Do not stop at the end-of-sentence token");
  cmd->callback([a] {
    auto log = [](const std::string& s) { fmt::print(stderr, "[dsa] {}\n", s); };
    const ops::OpTable& ops = ops::select_backend(a->reference ? "ref" : a->backend);
    auto model = Model::load(a->model, ops, log);
    log(fmt::format("loaded {} ({} layers, {:.1f} MB of weights), ops: {}", a->model, model->config().num_hidden_layers,
                    model->weight_bytes() / 1e6, ops.name));
    DSA_CHECK(!a->prompt_ids.empty() || !a->prompt.empty() || !a->messages.empty(),
              "give a prompt: --prompt-ids, --prompt or --messages");
    std::unique_ptr<text::Tokenizer> tok;
    std::vector<int32_t> prompt;
    if (!a->prompt_ids.empty()) {
      prompt = parse_ids(a->prompt_ids);
    } else {
      const std::string path = a->tokenizer.empty() ? text::default_tokenizer_path(a->model) : a->tokenizer;
      tok = std::make_unique<text::Tokenizer>(text::Tokenizer::from_file(path));
      prompt = a->prompt.empty() ? text::encode_messages_file(*tok, a->messages, a->thinking, a->special_in_content)
                                 : text::encode_prompt(*tok, a->prompt, a->thinking, a->special_in_content);
      log(fmt::format("prompt: {} tokens ({} mode)", prompt.size(), a->thinking ? "thinking" : "chat"));
    }
    GenerateOptions go;
    go.max_new_tokens = a->n;
    go.prefill_chunk = a->chunk;
    go.absorbed_prefill = a->prefill_attention == "absorbed";
    go.sampling = a->sampling;
    if (!a->ignore_eos) go.stop_ids = {int32_t(model->config().eos_token_id)};
    std::unique_ptr<Dump> dump;
    if (!a->dump_regex.empty()) {
      try {
        dump = std::make_unique<Dump>(a->dump_regex);
      } catch (const std::regex_error& e) {
        DSA_FAIL("--dump: invalid regex \"{}\": {}", a->dump_regex, e.what());
      }
      go.dump = dump.get();
    }
    Session session(*model);
    GenerateStats st;
    std::unique_ptr<text::IncrementalDecoder> stream;
    if (tok) stream = std::make_unique<text::IncrementalDecoder>(*tok);
    auto on_token = [&](int32_t t) {
      if (stream) {
        fmt::print("{}", stream->push(t));
        std::fflush(stdout);
      }
      return true;
    };
    std::vector<int32_t> out = session.generate(prompt, go, on_token, &st);
    if (stream) {
      fmt::print("{}\n", stream->flush());
      const std::string completion = tok->decode(out);
      const auto parsed = text::parse_completion(completion, a->thinking);
      if (!parsed.ok) log(fmt::format("the completion is not a well-formed V3.2 message: {}", parsed.error));
    }
    std::string ids;
    for (size_t i = 0; i < out.size(); ++i) ids += (i ? "," : "") + std::to_string(out[i]);
    fmt::print("{}{}\n", stream ? "ids: " : "", ids);
    std::fflush(stdout);  // text and ids before the stats on stderr
    fmt::print(stderr, "prefill: {} tokens in {:.3f} s ({:.1f} tok/s)\n", st.prompt_tokens, st.prefill_s, st.prefill_tok_s());
    fmt::print(stderr, "decode:  {} tokens, {} decode steps in {:.3f} s ({:.1f} tok/s)\n", st.generated,
               st.decode_steps, st.decode_s, st.decode_tok_s());
    fmt::print(stderr, "peak memory: {:.1f} MB (KV caches {:.2f} MB)\n", peak_rss_bytes() / 1e6,
               session.state().bytes() / 1e6);
    if (dump) {
      dump->write(a->dump_file);
      fmt::print(stderr, "dump: {} tensors → {}\n", dump->entries().size(), a->dump_file);
    }
  });
}

void add_inspect_command(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("inspect", "Check a checkpoint against the V3.2 tensor table and summarise it");
  cmd->add_option("-m,--model", *dir, "Model directory")->required();
  cmd->callback([dir] {
    auto log = [](const std::string& s) { fmt::print("{}\n", s); };
    auto model = Model::load(*dir, ops::ref_ops(), log);
    const ModelConfig& c = model->config();
    fmt::print("{}: deepseek_v32, {} layers ({} dense), hidden {}, heads {}, experts {} (top {}), index top-k {}\n",
               *dir, c.num_hidden_layers, c.first_k_dense_replace, c.hidden_size, c.num_attention_heads,
               c.n_routed_experts, c.num_experts_per_tok, c.index_topk);
    fmt::print("weights: {:.1f} MB; all tensors present with the expected dtypes and shapes\n", model->weight_bytes() / 1e6);
  });
}

}  // namespace dsa::app
