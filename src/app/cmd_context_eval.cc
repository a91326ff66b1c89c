// `dsa eval-context`: long-context quality of a DSA model (train/context_eval.h): dense vs sparse
// perplexity per position bucket on tokenised shards, and the indexer's recall per layer.
#include <cstdio>
#include <fstream>

#include "app/commands.h"
#include "app/reporting.h"
#include "io/safetensors.h"
#include "ops/backends.h"
#include "train/context_eval.h"
#include "train/shard_source.h"

namespace dsa::app {

void add_eval_context_command(CLI::App& app) {
  struct Args {
    std::string model, backend, json_out, png_out;
    std::vector<std::string> data;
    int64_t seq_len = 0, batch = 1, batches = 8, bucket = 0;
    uint64_t seed = 1;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand("eval-context",
                               "Dense vs sparse perplexity per context-position bucket, and the indexer's recall");
  c->add_option("-m,--model", a->model, "Model directory (V3.2 layout)")->required();
  c->add_option("--data", a->data, "Token shards (`dsa corpus build`), used whole")->required();
  c->add_option("--seq-len", a->seq_len, "Sequence length (default: 8 x index_topk)");
  c->add_option("--batch", a->batch, "Sequences per batch (default 1)");
  c->add_option("--batches", a->batches, "Batches (default 8)");
  c->add_option("--bucket", a->bucket, "Positions per bucket (default index_topk)");
  c->add_option("--seed", a->seed, "Data order seed (default 1)");
  c->add_option("--backend", a->backend, "Op backend (default: the fastest available)");
  c->add_option("--json", a->json_out, "Write the results as JSON");
  c->add_option("--png", a->png_out, "Plot the perplexity ratio per bucket");
  c->callback([a]() {
    reporting("eval-context", [&]() {
      const ModelConfig cfg = ModelConfig::load(a->model + "/config.json");
      auto model = Model::create(cfg, ops::select_backend(a->backend));
      Params params(model->backend(), cfg, false);
      params.load(Checkpoint::open(a->model));
      model->set_weights(params.forward_weights());
      train::TrainConfig tc;
      tc.val_data = a->data;
      tc.train_data = a->data;
      tc.seq_len = a->seq_len > 0 ? a->seq_len : 8 * cfg.index_topk;
      tc.batch = a->batch;
      tc.data_seed = a->seed;
      DSA_CHECK(tc.seq_len >= 2 && tc.batch >= 1, "eval-context: need --seq-len >= 2 and --batch >= 1");
      auto src = train::shard_source(tc, true, uint32_t(cfg.vocab_size));
      train::ContextEvalOptions o;
      o.batches = a->batches;
      o.bucket = a->bucket;
      std::fprintf(stderr, "[dsa] eval-context: %lld x %lld x %lld tokens, top-k %lld, backend %s\n",
                   (long long)a->batches, (long long)tc.batch, (long long)tc.seq_len, (long long)cfg.index_topk,
                   model->ops().name);
      const train::ContextEval ev = train::evaluate_context(*model, params, *src, o);
      std::printf("%s", train::format_context_eval(ev).c_str());
      std::printf("%.1f s\n", ev.seconds);
      if (!a->json_out.empty()) {
        std::ofstream f(a->json_out);
        f << train::context_eval_json(ev) << "\n";
        DSA_CHECK(f.good(), "cannot write {}", a->json_out);
      }
      if (!a->png_out.empty()) train::plot_context_eval(ev, a->png_out);
    });
  });
}

}  // namespace dsa::app
