// Export of trained parameters in the Hugging Face V3.2 layout (FP8 e4m3 + 128x128 scales,
// config.json, sharded safetensors + index) that `dsa run`, `dsa serve` and `dsa inspect` load
// as they are; the values are the trainer's forward weights bit for bit (docs/training.md §1).
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "model/params.h"

namespace dsa {

struct ExportInfo {
  int64_t bytes = 0;
  int shards = 0;
};

// max_shard_bytes: the largest shard file (tensors are never split; 0 = one file). The MTP
// layer (if the parameters have one) is written with copies of the main embedding / LM head.
ExportInfo export_checkpoint(const Params& params, const std::string& dir, int64_t max_shard_bytes,
                             const std::map<std::string, std::string>& metadata = {});

}  // namespace dsa
