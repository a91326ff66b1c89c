// The trainer's batches from tokenised shards (train/data/loader.h) behind train::BatchSource.
#pragma once
#include <memory>

#include "train/config.h"
#include "train/trainer.h"

namespace dsa::train {

// Training batches (split kTrain of cfg.train_data) and validation batches (cfg.val_data, or the
// held-out split of cfg.train_data when it is empty). max_vocab: the model's vocabulary.
std::unique_ptr<BatchSource> shard_source(const TrainConfig& cfg, bool validation, uint32_t max_vocab);

}  // namespace dsa::train
