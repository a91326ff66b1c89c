// Long-context quality of a DSA model (docs/dsa_conversion.md §4): the same batches through
// dense attention and through the indexer's top-k, the mean NLL per context-position bucket for
// both (their ratio is the sparse / dense perplexity ratio of the bucket), and per layer the
// indexer's recall and KL against the dense attention.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/params.h"
#include "train/trainer.h"

namespace dsa::train {

struct ContextEvalOptions {
  int64_t batches = 8;  // batches drawn from the source
  int64_t bucket = 0;   // positions per bucket (0 = the model's index_topk)
};

struct ContextBucket {
  int64_t begin = 0, end = 0;  // target positions [begin, end) (position of the predicted token - 1)
  double targets = 0;          // weighted count
  double dense_nll = 0, sparse_nll = 0;  // mean over the bucket's targets
};

struct ContextEval {
  int64_t seq_len = 0, index_topk = 0;
  std::vector<ContextBucket> buckets;
  double dense_nll = 0, sparse_nll = 0;  // over every target
  std::vector<double> recall, layer_kl;  // per layer (dense pass)
  std::vector<double> oracle_recall;     // per layer: the best recall a top-k set could reach
  double seconds = 0;
};

// The model's weights must be params.forward_weights(); batches of any T (the source's).
ContextEval evaluate_context(Model& model, Params& params, BatchSource& data, const ContextEvalOptions& o);

// A table (bucket, targets, dense ppl, sparse ppl, ratio), the recall line, and the JSON form.
std::string format_context_eval(const ContextEval& e);
std::string context_eval_json(const ContextEval& e);
// PNG: ppl ratio per bucket (x = bucket end).
void plot_context_eval(const ContextEval& e, const std::string& path);

}  // namespace dsa::train
