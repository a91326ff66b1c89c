// One decoder block of V3.2: MLA with the lightning indexer and sparse attention, then the dense
// MLP or the MoE. Internal to model/.
#pragma once
#include "model/model.h"

namespace dsa {

struct LayerContext {
  const ModelConfig& cfg;
  const ops::OpTable& ops;
  SequenceState& st;
  int64_t start, S;          // positions start .. start+S-1
  const float* rope_cos;     // [>= start+S, rope/2]
  const float* rope_sin;
  const ForwardOptions& opt;
};

// h: [S, H] bf16 block input (becomes the block output); residual: bf16 [S, H] residual stream
// (undefined before layer 0).
void run_layer(const LayerContext& ctx, const LayerWeights& w, int64_t layer, Tensor& h, Tensor& residual);

// act_quant + fp8_gemm: y[M, out] (row stride ldy) = x[M, in] @ W^T, spec §3.2.
void fp8_linear(const ops::OpTable& ops, const bf16* x, int64_t M, const Fp8Matrix& W, bf16* y, int64_t ldy);

// Attention + indexer part (model/attention.cc): returns o_proj output [S, H].
Tensor run_attention(const LayerContext& ctx, const LayerWeights& w, int64_t layer, const Tensor& xn);
// Feed-forward part (model/moe.cc): dense MLP or MoE, returns [S, H].
Tensor run_ffn(const LayerContext& ctx, const LayerWeights& w, int64_t layer, const Tensor& xn);

// Dump helper: adds a bf16 tensor [S, ...] under "l{layer}.{name}" if the dump wants it.
void dump_bf16(const LayerContext& ctx, int64_t layer, const char* name, const bf16* data, const Shape& row_shape);

}  // namespace dsa
