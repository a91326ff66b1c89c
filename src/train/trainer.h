// The training loop behind `dsa train CONFIG`: model and parameters from the config, data, AdamW
// with gradient accumulation, the balance-bias rule, periodic validation, metrics (JSONL + CSV),
// a live progress line, checkpoints (resume bit for bit; SIGINT / SIGTERM save one), a loss-curve
// PNG and an export in the V3.2 layout at the end.
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "model/train_step.h"
#include "train/config.h"
#include "train/optimizer.h"

namespace dsa::train {

// Where batches come from: the shard loader (train/data) or anything else with a position that a
// checkpoint can save and restore.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual TrainBatch next() = 0;
  virtual std::string state() const = 0;             // serialised position
  virtual void restore(const std::string& state) = 0;  // throws dsa::Error on a foreign state
  virtual void rewind() = 0;                         // back to the start (validation passes)
};

struct RunSummary {
  int64_t steps = 0;           // optimiser steps done in total (after resume: including earlier ones)
  double loss = NAN, val_loss = NAN;
  double tokens = 0, seconds = 0;  // this run
  bool interrupted = false;
  std::string export_dir, checkpoint;
};

class Trainer {
 public:
  using Log = std::function<void(const std::string&)>;
  // Builds the model (random init written under OUT/init, or the config's checkpoint), the
  // parameters and the optimiser; data comes from set_data or, if not set, the config's shards.
  Trainer(TrainConfig cfg, Log log);
  ~Trainer();
  void set_data(std::unique_ptr<BatchSource> train, std::unique_ptr<BatchSource> val);
  // Runs until cfg.steps optimiser steps are done (resume: continues from the newest checkpoint
  // under cfg.out) or stop_flag becomes true (then saves a checkpoint).
  RunSummary run(bool resume, const std::atomic<bool>* stop_flag = nullptr);

  Model& model() { return *model_; }
  Params& params() { return *params_; }
  const TrainConfig& config() const { return cfg_; }
  // Model FLOPs of one training token (6 N_active + attention, forward + backward).
  double flops_per_token() const;
  double validate();  // mean validation loss over cfg.eval_batches batches
  // The indexer on the validation batches under dense attention: mean KL per token summed over
  // layers, and per layer (main, then MTP) the mean KL and the recall (share of the dense
  // attention's mass inside the indexer's top-k) with its oracle bound (the mass of the k largest).
  struct IndexerEval {
    double kl = NAN;
    std::vector<double> layer_kl, recall, oracle;
  };
  IndexerEval validate_indexer();

 private:
  TrainConfig cfg_;
  Log log_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Params> params_;
  std::unique_ptr<AdamW> opt_;
  std::unique_ptr<BatchSource> train_, val_;
  TrainOptions topt_;
  void ensure_data();
};

}  // namespace dsa::train
