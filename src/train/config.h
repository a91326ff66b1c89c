// `dsa train CONFIG`: the training configuration (JSON; schema in docs/training.md §7). Every
// key is checked: an unknown key, a wrong type or an impossible value is a dsa::Error naming it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/optimizer.h"

namespace dsa::train {

struct TrainConfig {
  // model: start from a V3.2-layout checkpoint, or a random one made from a preset + overrides.
  std::string init;                 // checkpoint directory ("" = random init)
  std::string preset = "micro";     // make-model preset for the random init
  uint64_t init_seed = 1234;
  nlohmann::json model_overrides = nlohmann::json::object();  // config.json keys over the preset's
  bool mtp = true;                  // keep / create the MTP block
  std::string backend;              // "" = the default CPU backend
  // data
  std::vector<std::string> train_data, val_data;  // shard files (val: "" = the held-out split of train_data)
  int64_t seq_len = 256, batch = 8, accumulate = 1;
  uint64_t data_seed = 1;
  uint32_t val_permille = 5;
  bool overfit = false;             // repeat the first batch (tests, debugging)
  // optimisation
  int64_t steps = 100;
  Schedule schedule;
  AdamWConfig adamw;
  std::vector<std::string> freeze;  // regexes over HF parameter names
  // losses
  std::string attention = "dense";  // "dense" | "sparse"
  double mtp_weight = 0.3, balance_alpha = 1e-4, bias_gamma = 1e-3;
  // DSA conversion (docs/dsa_conversion.md): weight of the indexer's KL loss (0 = off), and
  // whether the LM losses train the model (false = the dense warm-up: only the indexer learns,
  // every other parameter is frozen).
  double indexer_kl = 0.0;
  bool lm = true;
  // run
  std::string out = "runs/train";
  int64_t log_every = 1, eval_every = 50, eval_batches = 4, checkpoint_every = 0, keep_checkpoints = 2;
  bool export_at_end = true;
  bool recompute = false;           // activation recomputation (TrainOptions::recompute)
  int64_t export_shard_mb = 15;
  double peak_tflops = 0;           // for MFU (0 = the backend's default: H200 bf16 dense on cuda, none on cpu)
  std::string source;               // the config file (for messages)
};

// Parses a config object; relative paths resolve against base_dir.
TrainConfig parse_train_config(const nlohmann::json& j, const std::string& base_dir);
TrainConfig load_train_config(const std::string& path);
nlohmann::json to_json(const TrainConfig& c);  // the effective configuration (written into the run)

}  // namespace dsa::train
