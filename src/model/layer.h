// One decoder block of V3.2: MLA with the lightning indexer and sparse attention, then the dense
// MLP or the MoE. Internal to model/.
#pragma once
#include "model/model.h"

namespace dsa {

// The token rows of one forward call: either S tokens of one sequence (prefill; mha = true when
// S > 1 unless ForwardOptions::absorbed_prefill) or one token of each of S sequences (batched
// decode).
struct Model::Rows {
  std::vector<SequenceState*> seqs;    // [S]
  std::vector<int32_t> pos;            // [S] absolute position of each row
  bool single = false;                 // S tokens of seqs[0] (prefill), else one per sequence
  bool mha = false;                    // MHA prefill path (S > 1 tokens of seqs[0])
  KvCache* kv = nullptr;
  int64_t maxb = 0;                    // block-table width
  std::vector<int32_t> block_table;    // [S, maxb] page ids of each row's sequence
  std::vector<int64_t> write_row;      // [S] physical latent row of each new token
  Tensor block_table_dev, pos_dev;     // backend copies of block_table and pos
  // Per call, the same for every layer (each layer's pools share one layout):
  int64_t max_end = 0;                 // max(pos) + 1
  Tensor ends_dev;                     // [S] pos + 1: visible keys of each row (indexer, top-k)
  Tensor index_off[2];                 // [S] byte offsets of the new tokens' index key / scale
  Tensor latent_off[3];                // [S] byte offsets of their latent fp8 part / scales / rope
};

struct LayerContext {
  const ModelConfig& cfg;
  Backend& be;
  Model::Rows& rows;
  int64_t S;
  const float* rope_cos;     // [>= max position + 1, rope/2]
  const float* rope_sin;
  const ForwardOptions& opt;
};

// h: [S, H] bf16 block input (becomes the block output); residual: bf16 [S, H] residual stream
// (undefined before layer 0).
void run_layer(const LayerContext& ctx, const LayerWeights& w, int64_t layer, Tensor& h, Tensor& residual);

// act_quant + fp8_gemm: y[M, out] (row stride ldy) = x[M, in] @ W^T, spec §3.2.
void fp8_linear(Backend& be, const bf16* x, int64_t M, const Fp8Matrix& W, bf16* y, int64_t ldy);
// A strided slice copy: rows of `bytes` from src (stride src_stride) to dst (stride dst_stride).
void copy_slice(Backend& be, const void* src, int64_t src_stride, void* dst, int64_t dst_stride, int64_t bytes,
                int64_t rows);

// Attention + indexer part (model/attention.cc): returns o_proj output [S, H].
Tensor run_attention(const LayerContext& ctx, const LayerWeights& w, int64_t layer, const Tensor& xn);
// Feed-forward part (model/moe.cc): dense MLP or MoE, returns [S, H].
Tensor run_ffn(const LayerContext& ctx, const LayerWeights& w, int64_t layer, const Tensor& xn);
// Fills w.expert_w / w.expert_s of an MoE layer (model/moe.cc); once per load, after the
// weights have their final (backend) addresses.
void build_expert_tables(Backend& be, LayerWeights& w);

// Dump helpers: add a backend tensor [S, ...] under "l{layer}.{name}" if the dump wants it.
void dump_bf16(const LayerContext& ctx, int64_t layer, const char* name, const bf16* data, const Shape& row_shape);
void dump_f32(const LayerContext& ctx, int64_t layer, const char* name, const float* data, const Shape& row_shape);

}  // namespace dsa
