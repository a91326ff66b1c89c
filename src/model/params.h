// Trainable parameters of a V3.2 model (docs/training.md §1): an fp32 master and an fp32
// gradient per tensor of the tensor table, in backend memory, and the forward weights rounded
// from the masters (FP8 matrices re-quantised, BF16 tensors rounded) exactly as an export writes them.
#pragma once
#include <string>
#include <unordered_map>
#include <vector>

#include "model/backend.h"
#include "model/config.h"
#include "model/tensor_table.h"
#include "model/weights.h"

namespace dsa {

struct Param {
  TensorSpec spec;     // HF name, kind, shape
  Tensor master;       // F32 backend tensor
  Tensor grad;         // F32 backend tensor
  bool decay = false;  // weight decay applies (matrices)
  bool gradient = true;  // false: updated by a rule, not by gradients (e_score_correction_bias)
  bool frozen = false;   // excluded from the optimiser (set by the trainer's freeze patterns)
};

class Params {
 public:
  // Every tensor of the table (MTP block when cfg has one and mtp is set; its embed_tokens /
  // shared_head.head are the main ones, not parameters), masters and gradients zero.
  Params(Backend& be, const ModelConfig& cfg, bool mtp);
  Params(const Params&) = delete;

  // Masters from a V3.2-layout checkpoint (validated like the loader; MTP tensors when present).
  void load(const Checkpoint& ckpt);
  // Masters from host fp32 values by name (the trainer's checkpoint resume).
  void set_master(const std::string& name, const float* host);

  const ModelConfig& config() const { return cfg_; }
  Backend& backend() const { return be_; }
  bool has_mtp() const { return mtp_; }
  std::vector<Param>& all() { return params_; }
  const std::vector<Param>& all() const { return params_; }
  Param* find(const std::string& name);
  Param& at(const std::string& name);
  const Param& at(const std::string& name) const { return const_cast<Params*>(this)->at(name); }
  float* grad(const std::string& name) { return at(name).grad.ptr<float>(); }
  int64_t count() const;  // number of scalar parameters

  void zero_grad();
  // Forward weights rounded from the masters (docs/training.md §1), in backend memory.
  ModelWeights forward_weights() const;
  // A parameter as a checkpoint stores it (docs/training.md §1): FP8 + scale (weight_scale_inv),
  // BF16 (matrices and norm vectors) or F32; backend memory.
  struct Stored {
    Tensor t, scale;
  };
  Stored stored(const Param& p) const;

 private:
  Backend& be_;
  ModelConfig cfg_;
  bool mtp_;
  std::vector<Param> params_;
  std::unordered_map<std::string, size_t> index_;
};

// Names of the MTP tensors that are copies of the main embedding / LM head.
bool is_shared_mtp_tensor(const ModelConfig& cfg, const std::string& name);

}  // namespace dsa
