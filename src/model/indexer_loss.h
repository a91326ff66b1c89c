// The lightning indexer's KL loss (docs/dsa_conversion.md): the DSA conversion's warm-up and
// sparse-stage objective for the indexer, on a block's training tape. Internal to model/; driven
// by TrainStep (TrainOptions::indexer_kl).
#pragma once
#include "model/backward.h"

namespace dsa {

struct IndexerKlStats {
  double loss_sum = 0;    // Σ_t KL_t over the call's query rows
  double recall_sum = 0;  // Σ_t recall_t (share of the target mass inside the indexer's top-k)
  double oracle_sum = 0;  // Σ_t of the largest share any top-k set could hold (the k largest p_t[j])
  int64_t rows = 0;
};

// KL_t(p_t ‖ softmax(I_t)) of every query row t over the keys its attention ran over (all causal
// keys in dense mode, the selected set in sparse mode), with p_t the attention probabilities
// summed over heads and L1-normalised. The tape must come from a forward with
// ForwardOptions::score_indexer. coef != 0: adds the gradient of coef · Σ_t KL_t to the indexer's
// parameters (wq_b, wk, k_norm, weights_proj) and nowhere else: its inputs (qr, the attn_norm
// output) are detached. key_base: [S] (backend) the row of position 0 of each row's sequence.
// recall: also measure the recall against the indexer's own top-k (meaningful in dense mode) and
// the oracle recall, the bound on it for a set of that size (a host pass over P: evaluation only).
IndexerKlStats indexer_kl(const GradContext& c, const LayerWeights& w, int64_t layer, const LayerTape& t,
                          const Tensor& key_base, float coef, bool recall);

}  // namespace dsa
