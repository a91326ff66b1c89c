// `dsa corpus retrieval` (synthetic long-context retrieval tasks -> JSONL, corpus text, shards) and
// `dsa eval-retrieval` (teacher-forced greedy exact match per kind, context length and depth).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "app/reporting.h"
#include "app/commands.h"
#include "base/error.h"
#include "ops/backends.h"
#include "text/chat_input.h"
#include "text/py_json.h"
#include "text/tokenizer.h"
#include "train/data/corpus.h"
#include "train/data/retrieval.h"
#include "train/retrieval_eval.h"

namespace dsa::app {

namespace {


struct RetrievalArgs {
  std::vector<std::string> kinds = {"kv"};
  std::vector<int64_t> contexts = {4096};
  std::vector<double> depths = {0, 0.25, 0.5, 0.75, 1};
  int count = 1, queries = 4;
  int64_t tolerance = 16;
  uint64_t seed = 1;
  std::string tokenizer, filler, out, text_out, shards_out;
};

struct EvalRetrievalArgs {
  std::string model, tasks, tokenizer, backend, json_out;
  bool dense = false;
};

}  // namespace

void add_corpus_retrieval_command(CLI::App& corpus) {
  auto a = std::make_shared<RetrievalArgs>();
  CLI::App* c = corpus.add_subcommand(
      "retrieval",
      "Synthetic long-context retrieval tasks (mqar, kv, needle) as JSONL, corpus text and shards");
  c->add_option("--kind", a->kinds, "mqar, kv and/or needle (comma-separated; default kv)")
      ->delimiter(',');
  c->add_option("--context", a->contexts,
                "context lengths in tokens (comma-separated; default 4096)")
      ->delimiter(',')
      ->check(CLI::Range(int64_t(32), int64_t(1) << 22));
  c->add_option("--depths", a->depths,
                "depths in [0, 1] of the queried records / needle (default 0,0.25,0.5,0.75,1)")
      ->delimiter(',');
  c->add_option("--count", a->count, "examples per (kind, context, depth) (default 1)")
      ->check(CLI::Range(1, 1000000));
  c->add_option("--queries", a->queries,
                "queries per mqar example (default 4; kv and needle ask one)")
      ->check(CLI::Range(1, 100000));
  c->add_option("--tolerance", a->tolerance,
                "an example has context-tolerance .. context tokens (default 16)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 20));
  c->add_option("--seed", a->seed, "seed of the whole set (default 1)");
  c->add_option("--filler", a->filler,
                "text file for needle filler (default: generated sentences)");
  c->add_option(
      "--tokenizer", a->tokenizer,
      "tokenizer.json (default: $DSA_TOKENIZER, else third_party/tokenizer/tokenizer.json)");
  c->add_option("-o,--out", a->out, "examples as JSONL (prompt, questions, answers, metadata)")
      ->required();
  c->add_option("--text-out", a->text_out,
                "also write DIR/text/retrieval.jsonl for `dsa corpus build --text DIR`");
  c->add_option("--shards-out", a->shards_out,
                "also tokenise that text into shards here, replacing any there (needs --text-out)");
  c->callback([a]() {
    reporting("corpus retrieval", [&]() {
      DSA_CHECK(a->shards_out.empty() || !a->text_out.empty(), "--shards-out needs --text-out");
      const std::string tok_path =
          a->tokenizer.empty() ? text::default_tokenizer_path() : a->tokenizer;
      const text::Tokenizer tok = text::Tokenizer::from_file(tok_path);
      std::string filler;
      if (!a->filler.empty()) {
        std::ifstream f(a->filler, std::ios::binary);
        DSA_CHECK(f.good(), "--filler {}: cannot open", a->filler);
        std::stringstream ss;
        ss << f.rdbuf();
        filler = ss.str();
        DSA_CHECK(!filler.empty(), "--filler {}: empty file", a->filler);
      }
      train::RetrievalSetOptions o;
      for (const std::string& k : a->kinds) o.kinds.push_back(train::parse_retrieval_kind(k));
      o.contexts = a->contexts;
      o.depths = a->depths;
      for (double d : o.depths) DSA_CHECK(d >= 0 && d <= 1, "--depths: {} is outside [0, 1]", d);
      o.count = a->count;
      o.queries = a->queries;
      o.tolerance = a->tolerance;
      o.seed = a->seed;
      const auto t0 = std::chrono::steady_clock::now();
      const train::RetrievalGenerator gen(tok, filler);
      const std::vector<train::RetrievalExample> ex = train::generate_retrieval_set(gen, o);
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      uint64_t tokens = 0;
      for (const auto& e : ex) tokens += uint64_t(e.context_tokens);
      train::write_retrieval_jsonl(a->out, ex);
      std::printf("%zu examples, %llu tokens in %.2f s (%.0f tokens/s) -> %s\n", ex.size(),
                  (unsigned long long)tokens, secs, double(tokens) / std::max(secs, 1e-9),
                  a->out.c_str());
      if (!a->text_out.empty()) {
        train::write_retrieval_text(a->text_out, ex);
        std::printf("corpus text: %s/text/retrieval.jsonl\n", a->text_out.c_str());
      }
      if (!a->shards_out.empty()) {
        train::CorpusBuildOptions b;
        b.text_dir = a->text_out;
        b.out_dir = a->shards_out;
        b.tokenizer_path = tok_path;
        b.threads = int(std::max(1u, std::min(4u, std::thread::hardware_concurrency())));
        b.overwrite = true;
        b.quiet = true;
        const train::CorpusSummary s = train::build_corpus(b);
        std::printf("%llu tokens in %zu shard(s) under %s\n", (unsigned long long)s.tokens,
                    s.shards.size(), a->shards_out.c_str());
      }
    });
  });
}

void add_eval_retrieval_command(CLI::App& app) {
  auto a = std::make_shared<EvalRetrievalArgs>();
  CLI::App* c = app.add_subcommand(
      "eval-retrieval",
      "Teacher-forced greedy exact-match accuracy on retrieval tasks, per kind, context and depth");
  c->add_option("-m,--model", a->model, "Model directory")->required();
  c->add_option("--tasks", a->tasks, "examples from `dsa corpus retrieval` (JSONL)")->required();
  c->add_option(
      "--tokenizer", a->tokenizer,
      "tokenizer.json (default: $DSA_TOKENIZER, third_party/tokenizer, or the model dir)");
  c->add_option("--backend", a->backend, "Op backend (default: the fastest available)");
  c->add_flag("--dense", a->dense,
              "dense attention over every causal key (bypass the indexer's top-k)");
  c->add_option("--json", a->json_out,
                "Write per-example results and the per-cell accuracy as JSON");
  c->callback([a]() {
    reporting("eval-retrieval", [&]() {
      const std::vector<train::RetrievalExample> ex = train::read_retrieval_jsonl(a->tasks);
      auto log = [](const std::string& s) { std::fprintf(stderr, "[dsa] %s\n", s.c_str()); };
      auto model = Model::load(a->model, ops::select_backend(a->backend), log);
      const text::Tokenizer tok = text::Tokenizer::from_file(
          a->tokenizer.empty() ? text::default_tokenizer_path(a->model) : a->tokenizer);
      ForwardOptions fo;
      fo.absorbed_prefill = true;  // the trainer's and the decoder's arithmetic for every row
      fo.dense = a->dense;
      std::vector<train::RetrievalCheck> res;
      text::OrderedJson per = text::OrderedJson::array();
      const auto t0 = std::chrono::steady_clock::now();
      uint64_t tokens = 0;
      const bool tty = isatty(2);
      for (size_t i = 0; i < ex.size(); ++i) {
        const train::RetrievalTokens t =
            train::tokenize_retrieval(ex[i], tok, int32_t(model->config().bos_token_id));
        res.push_back(train::check_retrieval(*model, t, fo));
        tokens += t.ids.size();
        std::vector<std::string> pred_text;
        for (const auto& p : res.back().predicted) pred_text.push_back(tok.decode(p));
        per.push_back({{"id", ex[i].id},
                       {"kind", train::retrieval_kind_name(ex[i].kind)},
                       {"context", ex[i].context_target},
                       {"depth", ex[i].depth},
                       {"correct", res.back().correct},
                       {"queries_correct", res.back().queries_correct},
                       {"queries", ex[i].queries.size()},
                       {"predicted", pred_text},
                       {"predicted_ids", res.back().predicted},
                       {"text_match", train::answers_match(ex[i], pred_text)}});
        if (tty || i + 1 == ex.size())
          std::fprintf(stderr, "\r%zu/%zu examples%s", i + 1, ex.size(),
                       i + 1 == ex.size() ? "\n" : "");
      }
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const auto cells = train::aggregate_retrieval(ex, res);
      std::printf("%s", train::format_retrieval_table(cells).c_str());
      int ok = 0;
      for (const auto& r : res) ok += r.correct;
      const double acc = double(ok) / double(ex.size());
      std::printf("accuracy %.4f (%d of %zu examples), %llu tokens in %.1f s\n", acc, ok, ex.size(),
                  (unsigned long long)tokens, secs);
      if (!a->json_out.empty()) {
        text::OrderedJson cj = text::OrderedJson::array();
        for (const auto& c : cells)
          cj.push_back({{"kind", c.kind},
                        {"context", c.context},
                        {"depth", c.depth},
                        {"examples", c.examples},
                        {"accuracy", double(c.correct) / c.examples},
                        {"query_accuracy", double(c.queries_correct) / c.queries}});
        std::ofstream f(a->json_out);
        f << text::OrderedJson{{"model", a->model},
                               {"tasks", a->tasks},
                               {"scoring", "teacher-forced greedy exact match"},
                               {"dense", a->dense},
                               {"accuracy", acc},
                               {"cells", cj},
                               {"examples", per}}
                 .dump(1, ' ', false,
                       text::OrderedJson::error_handler_t::replace)  // decoded partial UTF-8
          << "\n";
        DSA_CHECK(f.good(), "cannot write {}", a->json_out);
      }
    });
  });
}

}  // namespace dsa::app
