// Trainer checkpoints: masters, AdamW moments, the step, the data position and the run's
// counters, in OUT/checkpoints/step-NNNNNNN/ (safetensors shards of <= 16 MB + trainer.json),
// written to a temporary directory and renamed, so an interrupted save never leaves a broken one.
// A resumed run continues bit for bit (tests/train_loop_test.cc).
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "model/params.h"
#include "train/optimizer.h"

namespace dsa::train {

struct CheckpointMeta {
  int64_t step = 0;           // optimiser steps done
  std::string data_state;     // the data loader's position (its own serialisation)
  nlohmann::json extra;       // counters (tokens seen, elapsed seconds, ...)
};

// Returns the checkpoint directory; removes older ones beyond `keep`.
std::string save_checkpoint(const std::string& out_dir, const CheckpointMeta& meta, Params& params, AdamW& opt,
                            int64_t keep);
// The newest complete checkpoint under out_dir, or "" if none.
std::string latest_checkpoint(const std::string& out_dir);
// Restores masters and moments (every tensor must be present with its shape); returns the meta.
CheckpointMeta load_checkpoint(const std::string& ckpt_dir, Params& params, AdamW& opt);

}  // namespace dsa::train
