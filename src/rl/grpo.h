// GRPO as DeepSeek-V3.2 runs it (../shared/spec/v32-training.md §3, docs/rl.md): group-relative
// advantages, the clipped token surrogate averaged per sequence, the unbiased KL estimate against
// a frozen reference policy, and the three stabilisers — off-policy sequence masking, keep-routing
// and keep-sampling-mask — on rollouts from the serving engine, trained with the trainer's
// forward (model/train_step.h) on the very weights the engine samples from.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "model/model.h"
#include "model/params.h"
#include "train/optimizer.h"

namespace dsa::rl {

struct GrpoConfig {
  double clip = 0.2;               // ε: the ratio is clipped to [1 - ε, 1 + ε]
  double beta = 0.0;               // β of the KL term (0: the reference policy is never run)
  bool unbiased_kl = true;         // V3.2's unbiased estimate; false: plain K3
  bool opsm = true;                // off-policy sequence masking
  double opsm_delta = 0.5;         // δ: a negative sequence is masked when mean_t log(π_old/π_θ) > δ
  bool keep_routing = true;        // every trainer forward replays the experts the engine chose
  bool keep_sampling_mask = true;  // π_θ, π_ref and π_old renormalised over each draw's kept set
  int minibatches = 1;             // optimiser updates per rollout batch (the batch split in order)
  bool dense = false;              // trainer attention; false: the indexer's top-k, as the engine runs
  bool check_mismatch = true;      // every sample's trainer log-probs against the engine's before the first update
};

// One sampled response (rollouts.h fills it from the engine).
struct Sample {
  int64_t group = 0;                     // samples of one prompt share a group
  std::vector<int32_t> prompt, tokens;   // tokens: what follows the prompt (sampled ids, a stop id included)
  // Per token of `tokens`: 1 = sampled by the policy (trained), 0 = given (a multi-turn episode's
  // tool results and the template between turns: no ratio, no gradient). Empty: all sampled.
  std::vector<uint8_t> loss_mask;
  std::vector<double> logp, logp_kept;   // per token: the engine's log-probs at sampling time (SampleInfo); 0 where given
  std::vector<int64_t> mask_offsets;     // keep-sampling-mask, CSR over tokens (tokens.size() + 1)
  std::vector<int32_t> mask_ids;         //   an empty row: nothing was cut (given tokens: ignored)
  std::shared_ptr<const Decisions> experts;  // keep-routing: prompt + tokens - 1 rows
  double reward = 0;
  bool pass = false;                     // the verifier accepted it (for the pass rate)
  double advantage = 0;                  // set by group_advantages
};

// Per-token closed forms in log-probs (lt = log π_θ, lold = log π_old, lref = log π_ref): the
// unbiased estimate D = exp(lt - lold) · (exp(lref - lt) - (lref - lt) - 1), whose expectation
// under π_old is KL(π_θ ‖ π_ref), and plain K3 = exp(lref - lt) - (lref - lt) - 1; each with its
// derivative in lt (the unbiased one's: exp(lt - lold) · (lt - lref); K3's: 1 - exp(lref - lt)).
double kl_unbiased(double lt, double lold, double lref);
double kl_unbiased_grad(double lt, double lold, double lref);
double kl_k3(double lt, double lref);
double kl_k3_grad(double lt, double lref);

// Â_i = R_i - mean of R over the sample's group (no division by the standard deviation).
void group_advantages(std::vector<Sample>& samples);

// Off-policy sequence masking: true (masked) iff Â < 0 and mean_t (lold_t - lt_t) > δ.
bool opsm_masked(double advantage, const std::vector<double>& lold, const std::vector<double>& lt, double delta);

// One sequence's share of the loss, −(w / |o|) Σ_t [min(r_t Â, clip(r_t) Â) · M − β D_t] with
// r_t = exp(lt_t - lold_t) and M the OPSM mask, and its derivative in each lt_t (dlt, resized).
struct SeqObjective {
  double loss = 0;
  double kl = 0;         // Σ_t D_t (0 without a reference)
  int64_t clipped = 0;   // tokens whose surrogate took the clipped branch (no gradient)
  bool masked = false;   // OPSM dropped the surrogate
};
SeqObjective sequence_objective(const GrpoConfig& c, double advantage, const std::vector<double>& lold,
                                const std::vector<double>& lt, const std::vector<double>* lref, double w,
                                std::vector<double>& dlt);

struct GrpoStats {
  int64_t samples = 0, tokens = 0, updates = 0;
  double reward = 0, pass_rate = 0, mean_length = 0;
  double loss = 0;            // mean over the updates
  double kl = 0;              // mean D per token (β > 0)
  double masked = 0;          // share of sequences OPSM masked
  double clipped = 0;         // share of tokens on the clipped branch
  double entropy = 0;         // mean −log π_old of the sampled tokens (a Monte-Carlo entropy estimate)
  double grad_norm = 0;       // of the last update, before clipping
  // Before the first update: |log π_θ (trainer) − log π_old (engine)| over every sampled token
  // (check_mismatch), with and without the kept-set renormalisation.
  double mismatch_max = 0, mismatch_mean = 0;
  int64_t mismatch_tokens = 0;
};

class Grpo {
 public:
  // model: the engine's model; after every optimiser step its weights become the new masters'
  // (Model::set_weights — the engine samples from them from its next step on; flush its prefix
  // cache). The reference policy π_ref is the parameters' weights at construction.
  Grpo(Model& model, Params& params, train::AdamW& opt, GrpoConfig cfg);
  // One GRPO step over a rollout batch: advantages, π_ref (β > 0), the mismatch check, then
  // cfg.minibatches optimiser updates. The engine must be idle (the model is shared).
  GrpoStats update(std::vector<Sample>& batch, double lr);
  const GrpoConfig& config() const { return cfg_; }
  int64_t steps() const { return step_; }

 private:
  struct Prepared;
  Prepared prepare(const Sample& s) const;
  std::vector<double> sampled_logprobs(const Prepared& p);

  Model& m_;
  Params& p_;
  train::AdamW& opt_;
  GrpoConfig cfg_;
  ModelWeights ref_;
  int64_t step_ = 0;
};

}  // namespace dsa::rl
