// evaluate_context (train/context_eval.h): TrainStep::evaluate twice per batch (dense, with the
// indexer's recall; then sparse), per-target log-probs bucketed by position.
#include "train/context_eval.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>

#include "model/train_step.h"
#include "train/plot.h"

namespace dsa::train {

ContextEval evaluate_context(Model& model, Params& params, BatchSource& data, const ContextEvalOptions& o) {
  DSA_CHECK(o.batches >= 1, "eval-context: need at least one batch");
  const ModelConfig& cfg = model.config();
  const int64_t bucket = o.bucket > 0 ? o.bucket : cfg.index_topk;
  DSA_CHECK(bucket > 0, "eval-context: bucket size must be > 0");
  const auto t0 = std::chrono::steady_clock::now();
  ContextEval ev;
  ev.index_topk = cfg.index_topk;
  TrainStep step(model, params);
  std::vector<double> dsum, ssum, wsum;
  double rows = 0, dall = 0, sall = 0, wall = 0;
  for (int64_t i = 0; i < o.batches; ++i) {
    const TrainBatch b = data.next();
    ev.seq_len = std::max(ev.seq_len, b.T);
    TrainOptions dense;
    dense.dense = true;
    dense.indexer_recall = true;
    TrainOptions sparse;
    sparse.dense = false;
    const TrainResult rd = step.evaluate(b, dense), rs = step.evaluate(b, sparse);
    const size_t nb = size_t((b.T + bucket - 1) / bucket);
    if (dsum.size() < nb) dsum.resize(nb, 0.0), ssum.resize(nb, 0.0), wsum.resize(nb, 0.0);
    for (int64_t r = 0; r < b.B; ++r)
      for (int64_t t = 0; t < b.T; ++t) {
        const size_t k = size_t(r * b.T + t);
        const double w = b.weights.empty() ? 1.0 : b.weights[k];
        if (w == 0) continue;
        const size_t j = size_t(t / bucket);
        dsum[j] -= w * rd.logprobs[k];
        ssum[j] -= w * rs.logprobs[k];
        wsum[j] += w;
        dall -= w * rd.logprobs[k];
        sall -= w * rs.logprobs[k];
        wall += w;
      }
    const double n = double(b.B * b.T);
    if (ev.recall.empty())
      ev.recall.assign(rd.layer_recall.size(), 0.0), ev.layer_kl.assign(rd.layer_kl.size(), 0.0),
          ev.oracle_recall.assign(rd.layer_oracle_recall.size(), 0.0);
    for (size_t l = 0; l < rd.layer_recall.size(); ++l) ev.recall[l] += rd.layer_recall[l] * n;
    for (size_t l = 0; l < rd.layer_oracle_recall.size(); ++l) ev.oracle_recall[l] += rd.layer_oracle_recall[l] * n;
    for (size_t l = 0; l < rd.layer_kl.size(); ++l) ev.layer_kl[l] += rd.layer_kl[l] * n;
    rows += n;
  }
  for (double& v : ev.recall) v /= rows;
  for (double& v : ev.oracle_recall) v /= rows;
  for (double& v : ev.layer_kl) v /= rows;
  for (size_t j = 0; j < dsum.size(); ++j) {
    ContextBucket cb;
    cb.begin = int64_t(j) * bucket;
    cb.end = std::min<int64_t>(cb.begin + bucket, ev.seq_len);
    cb.targets = wsum[j];
    cb.dense_nll = wsum[j] > 0 ? dsum[j] / wsum[j] : NAN;
    cb.sparse_nll = wsum[j] > 0 ? ssum[j] / wsum[j] : NAN;
    ev.buckets.push_back(cb);
  }
  ev.dense_nll = wall > 0 ? dall / wall : NAN;
  ev.sparse_nll = wall > 0 ? sall / wall : NAN;
  ev.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return ev;
}

std::string format_context_eval(const ContextEval& e) {
  std::string s = fmt::format("{:>15} {:>9} {:>11} {:>11} {:>9}\n", "positions", "targets", "dense ppl", "sparse ppl",
                              "ratio");
  for (const ContextBucket& b : e.buckets)
    s += fmt::format("{:>15} {:>9.0f} {:>11.4f} {:>11.4f} {:>9.5f}\n", fmt::format("[{}, {})", b.begin, b.end),
                     b.targets, std::exp(b.dense_nll), std::exp(b.sparse_nll), std::exp(b.sparse_nll - b.dense_nll));
  s += fmt::format("{:>15} {:>9} {:>11.4f} {:>11.4f} {:>9.5f}\n", "all", "", std::exp(e.dense_nll),
                   std::exp(e.sparse_nll), std::exp(e.sparse_nll - e.dense_nll));
  s += "indexer recall per layer (dense attention mass inside the top-k):";
  for (double r : e.recall) s += fmt::format(" {:.4f}", r);
  s += "\noracle recall per layer (the k largest attention masses):";
  for (double r : e.oracle_recall) s += fmt::format(" {:.4f}", r);
  s += "\nindexer KL per layer:";
  for (double v : e.layer_kl) s += fmt::format(" {:.4f}", v);
  s += "\n";
  return s;
}

std::string context_eval_json(const ContextEval& e) {
  nlohmann::json b = nlohmann::json::array();
  for (const ContextBucket& x : e.buckets)
    b.push_back({{"begin", x.begin},
                 {"end", x.end},
                 {"targets", x.targets},
                 {"dense_nll", x.dense_nll},
                 {"sparse_nll", x.sparse_nll},
                 {"ppl_ratio", std::exp(x.sparse_nll - x.dense_nll)}});
  return nlohmann::json{{"seq_len", e.seq_len},
                        {"index_topk", e.index_topk},
                        {"dense_nll", e.dense_nll},
                        {"sparse_nll", e.sparse_nll},
                        {"ppl_ratio", std::exp(e.sparse_nll - e.dense_nll)},
                        {"buckets", b},
                        {"recall", e.recall},
                        {"oracle_recall", e.oracle_recall},
                        {"layer_kl", e.layer_kl},
                        {"seconds", e.seconds}}
      .dump(1);
}

void plot_context_eval(const ContextEval& e, const std::string& path) {
  Series r{"sparse / dense ppl", {}, {}, {214, 39, 40}}, one{"1", {}, {}, {150, 150, 150}};
  for (const ContextBucket& b : e.buckets) {
    r.x.push_back(double(b.end));
    r.y.push_back(std::exp(b.sparse_nll - b.dense_nll));
    one.x.push_back(double(b.end));
    one.y.push_back(1.0);
  }
  write_png_chart(path, Chart{fmt::format("perplexity ratio by position (top-k {})", e.index_topk), "position", "",
                              {r, one}});
}

}  // namespace dsa::train
