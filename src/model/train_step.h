// One training step of a V3.2 model (docs/training.md): the engine's own forward over a batch
// (absorbed attention for every row, the same ops and decisions, a tape of what the backward
// needs), the losses (next-token CE, MTP, sequence-wise balance), and the backward of every op
// into the parameters' gradients. Not thread-safe; one per model.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "model/model.h"
#include "model/params.h"

namespace dsa {

struct TrainBatch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> tokens;  // [B, T+1]: inputs 0..T-1, targets 1..T
  std::vector<float> weights;   // [B, T] loss weight of each target (empty: all 1)
};

struct TrainOptions {
  bool dense = true;            // attention over every causal key; false: the indexer's top-k
  double mtp_weight = 0.0;      // λ of the MTP loss (0: the MTP block is not run)
  double balance_alpha = 0.0;   // α of the sequence-wise balance loss
  // Activation recomputation: the forward keeps only each main block's inputs; the backward runs
  // the block's forward again (same ops, same decisions: bit-identical) to rebuild its tape just
  // before its backward. Same gradients, one block's tape alive at a time, one more forward.
  bool recompute = false;
  // The indexer's KL loss (DSA conversion, docs/dsa_conversion.md): its weight; the objective gets
  // indexer_kl · Σ_layers mean_t KL_t, whose gradient reaches the indexers' parameters only.
  double indexer_kl = 0.0;
  // Measure each layer's indexer recall (the share of the dense attention's mass inside the
  // indexer's top-k; dense mode only).
  bool indexer_recall = false;
  // false: the LM losses (CE, MTP, balance) are computed but send no gradient (the warm-up, where
  // only the indexer learns and the main model's backward is skipped).
  bool lm_backward = true;
  // Decisions to force, one per sequence: layers 0..n-1 hold its T main rows, layer n (when MTP
  // runs) its T-1 MTP rows. Keep routing (RL) and fixtures.
  const std::vector<Decisions>* replay = nullptr;
  std::vector<Decisions>* record = nullptr;  // receives the decisions, same layout
  // Keep-sampling-mask (RL): per main target (the B*T rows, CSR: ids kept_ids[kept_offsets[r] ..
  // kept_offsets[r+1]), ascending), the ids its draw could have produced; an empty row = the whole
  // vocabulary. The main head's log-prob of such a target is renormalised over its set,
  // z[y] - log Σ_{v∈K} exp z[v] (the engine's SampleInfo::logprob_kept), and the ids outside it get
  // no gradient. Every target must lie in its set.
  const std::vector<int64_t>* kept_offsets = nullptr;  // [B*T + 1]
  const std::vector<int32_t>* kept_ids = nullptr;
  // A policy objective in place of the weighted CE (RL, train/grpo.h): called with the main
  // head's log-probs [B*T] (after kept sets); returns the loss and fills dlogp [B*T] (given
  // zeroed) with dL/dlogp. batch.weights is then unused. The head runs twice when a backward
  // follows: once for the log-probs, once for the gradients.
  std::function<double(const std::vector<double>& logp, std::vector<float>& dlogp)> objective;
};

struct TrainResult {
  double loss = 0, loss_main = 0, loss_mtp = 0, loss_bal = 0;
  double weight_sum = 0;                          // Σ w over the main targets
  std::vector<double> logprobs;                   // [B*T] log p(target) of the main head
  std::vector<double> mtp_logprobs;               // [B*(T-1)] of the MTP head
  std::vector<std::vector<int64_t>> expert_load;  // per MoE layer (main, then MTP): [E] choices
  double loss_kl = 0;                             // Σ over layers of mean_t KL_t (when indexer_kl or recall)
  std::vector<double> layer_kl, layer_recall;     // per layer (main, then MTP): mean_t KL_t, mean_t recall_t
  std::vector<double> layer_oracle_recall;        // per layer: mean_t of the best recall a top-k set could reach
};

class TrainStep {
 public:
  // The model's weights must be params.forward_weights() (set by the caller before each step).
  TrainStep(Model& model, Params& params);
  // Forward and backward; gradients are added to params' grads, scaled by grad_scale.
  TrainResult run(const TrainBatch& batch, const TrainOptions& opt, float grad_scale = 1.0f);
  // Forward only: losses and log-probs, no gradients.
  TrainResult evaluate(const TrainBatch& batch, const TrainOptions& opt);

 private:
  struct Pass;
  TrainResult step(const TrainBatch& batch, const TrainOptions& opt, float grad_scale, bool backward);
  Model& m_;
  Params& p_;
};

}  // namespace dsa
