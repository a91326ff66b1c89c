// AdamW on the parameters' fp32 masters (docs/training.md §5) with global-norm clipping, weight
// decay by parameter class, freezing by name pattern, the learning-rate schedules, and the
// auxiliary-loss-free balance-bias rule. Model-agnostic: it sees only named tensors.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/params.h"

namespace dsa::train {

struct Schedule {
  std::string kind = "cosine";  // "cosine" (warm-up + cosine to min_lr), "wsd" (warm-up, stable, decay), "constant"
  double lr = 3e-4, min_lr = 3e-5;
  int64_t warmup = 0, total = 1;
  double decay_frac = 0.2;  // wsd: share of the steps in the final linear decay
  double at(int64_t step) const;  // lr of optimiser step `step` (0-based)
  void validate() const;          // throws dsa::Error
};

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1, clip = 1.0;  // clip <= 0: off
};

struct StepStats {
  double lr = 0, grad_norm = 0, clip_scale = 1;
};

class AdamW {
 public:
  // freeze: regexes (ECMAScript, matched against the whole HF name); frozen parameters keep
  // their masters bit for bit. Every pattern must match at least one parameter.
  AdamW(Params& params, const AdamWConfig& cfg, const std::vector<std::string>& freeze = {});
  // One update from the accumulated gradients (clipping over the trainable ones); step is the
  // 0-based optimiser step (bias correction uses step + 1).
  StepStats step(int64_t step, double lr);
  // State tensors for checkpoints: "m.<name>" and "v.<name>", backend memory.
  std::vector<std::pair<std::string, Tensor*>> state();
  int64_t trainable_count() const;

 private:
  Params& p_;
  AdamWConfig cfg_;
  std::vector<Tensor> m_, v_;  // per parameter (empty for frozen / rule-updated ones)
};

// Auxiliary-loss-free balancing: bias_e += gamma * sign(mean(load) - load_e) for each MoE layer's
// e_score_correction_bias (loads in the order TrainResult::expert_load reports them: main MoE
// layers ascending, then the MTP block). Frozen biases are left alone.
void update_balance_bias(Params& params, const std::vector<std::vector<int64_t>>& load, double gamma);

}  // namespace dsa::train
