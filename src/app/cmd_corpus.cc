// `dsa corpus build` (JSONL text -> tokenised shards) and `dsa corpus stats` (documents/tokens
// per source of a set of shards, validated on the way).
#include <cstdio>
#include <memory>
#include <thread>

#include "app/reporting.h"
#include "app/commands.h"
#include "base/error.h"
#include "text/chat_input.h"
#include "train/data/corpus.h"

namespace dsa::app {

namespace {

struct CorpusOptions {
  train::CorpusBuildOptions build;
  std::vector<std::string> stats_paths;
  uint32_t val_permille = 5;
};

template <class F>
void run_reporting(const char* what, F&& f) {
  reporting(std::string("corpus ") + what, f);
}

}  // namespace

void add_corpus_command(CLI::App& app) {
  auto o = std::make_shared<CorpusOptions>();
  o->build.threads = int(std::max(1u, std::thread::hardware_concurrency()));
  CLI::App* cmd = app.add_subcommand("corpus", "Training corpus: tokenise text into shards, show shard statistics");
  cmd->require_subcommand(1);

  CLI::App* b = cmd->add_subcommand("build", "Tokenise TEXT_DIR/text/*.jsonl (scripts/corpus_text.py) into shards");
  b->add_option("--text", o->build.text_dir, "directory made by scripts/corpus_text.py (an unpacked bundle)")
      ->required();
  b->add_option("-o,--out", o->build.out_dir, "output directory (shard-NNNNN.dsatok, manifest.json, LICENSES.md)")
      ->required();
  b->add_option("--tokenizer", o->build.tokenizer_path,
                "tokenizer.json (default: $DSA_TOKENIZER, else third_party/tokenizer/tokenizer.json)");
  b->add_option("--shard-tokens", o->build.shard_tokens, "close a shard after this many tokens (default 16777216)")
      ->check(CLI::Range(uint64_t(1), uint64_t(1) << 36));
  b->add_option("--threads", o->build.threads, "tokenizer threads (default: all cores)")->check(CLI::Range(1, 256));
  b->add_flag("--overwrite", o->build.overwrite, "replace shards already in the output directory");
  b->add_flag("-q,--quiet", o->build.quiet, "no per-source progress lines");
  b->callback([o]() {
    run_reporting("build", [&]() {
      if (o->build.tokenizer_path.empty()) o->build.tokenizer_path = text::default_tokenizer_path();
      const train::CorpusSummary s = train::build_corpus(o->build);
      std::printf("%s", train::format_summary(s, false).c_str());
      std::printf("%llu tokens in %zu shard(s) under %s (%.1f MB of text, %.1f s, %.2f MB/s)\n",
                  (unsigned long long)s.tokens, s.shards.size(), o->build.out_dir.c_str(), double(s.bytes) / 1e6,
                  s.seconds, double(s.bytes) / 1e6 / std::max(s.seconds, 1e-9));
    });
  });

  add_corpus_retrieval_command(*cmd);

  CLI::App* st = cmd->add_subcommand("stats", "Documents and tokens per source of shards (files or directories)");
  st->add_option("paths", o->stats_paths, ".dsatok files or directories of them")->required();
  st->add_option("--val-permille", o->val_permille, "held-out fraction to report, per mille (default 5)")
      ->check(CLI::Range(0, 1000));
  st->callback([o]() {
    run_reporting("stats", [&]() {
      const train::CorpusSummary s = train::corpus_stats(o->stats_paths, o->val_permille);
      std::printf("%s", train::format_summary(s, true).c_str());
      std::printf("%zu shard(s), vocab_size %u, tokenizer %016llx, validation split %u per mille\n", s.shards.size(),
                  s.vocab_size, (unsigned long long)s.tokenizer_hash, o->val_permille);
    });
  });
}

}  // namespace dsa::app
