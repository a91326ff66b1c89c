// The V3.2 tensor table: every checkpoint tensor (HF names) with the shape derived from the
// config, its dtype and, for FP8 matrices, the block-scale tensor. Drives loading and make-model.
#pragma once
#include <string>
#include <vector>

#include "base/tensor.h"
#include "model/config.h"

namespace dsa {

enum class TensorKind { Fp8Matrix, Bf16Matrix, NormVector, F32Vector };

struct TensorSpec {
  std::string name;  // e.g. "model.layers.3.self_attn.q_a_proj.weight"
  TensorKind kind;
  Shape shape;       // [out, in] for matrices
  bool mtp = false;  // belongs to the MTP (next-token prediction) layer
  // For Fp8Matrix: the scale tensor name and shape [ceil(out/128), ceil(in/128)].
  std::string scale_name() const;
  Shape scale_shape() const;
  DType dtype() const;  // the dtype written by make-model and expected by the loader
};

// All tensors of the main model, then (if include_mtp) those of the MTP layer(s).
std::vector<TensorSpec> tensor_table(const ModelConfig& c, bool include_mtp);

// How many checkpoint tensors (FP8 scale tensors included) the table of one main layer, one MTP
// layer and the whole main model holds, computed without building it: an absurd config (2^40
// experts) is refused by comparing with the checkpoint before any table is built.
int64_t layer_tensor_count(const ModelConfig& c, int64_t layer, bool mtp);
int64_t main_tensor_count(const ModelConfig& c);

}  // namespace dsa
