// `dsa make-model`: deterministic random checkpoints with the exact V3.2 tensor names, dtypes
// and block-scale layout (presets micro, tiny, demo, v32-layer).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace dsa {

struct MakeModelOptions {
  std::string preset = "tiny";
  std::string out_dir;
  uint64_t seed = 1234;
  int64_t layers = -1;   // override num_hidden_layers (v32-layer: 1 or 2)
  int shards = 1;        // >1 writes model-0000k-of-0000n.safetensors + index.json
  bool mtp = true;       // also write the MTP layer tensors
  const ModelConfig* config = nullptr;  // instead of the preset's (e.g. a training config's model)
};

std::vector<std::string> preset_names();
ModelConfig preset_config(const std::string& preset);  // throws on an unknown name
// config.json and generation_config.json of a checkpoint directory.
void write_model_config(const std::string& dir, const ModelConfig& c);
// Writes config.json, generation_config.json and the safetensors file(s); returns bytes written.
int64_t make_model(const MakeModelOptions& opt);

}  // namespace dsa
