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
  std::vector<std::pair<SequenceState*, int64_t>> distinct;  // each sequence once, with its row count
  Tensor block_table_dev, pos_dev;     // backend copies of block_table and pos
  // Per call, the same for every layer (each layer's pools share one layout):
  int64_t max_end = 0;                 // max(pos) + 1
  Tensor ends_dev;                     // [S] pos + 1: visible keys of each row (indexer, top-k)
  Tensor index_off[2];                 // [S] byte offsets of the new tokens' index key / scale
  Tensor latent_off[3];                // [S] byte offsets of their latent fp8 part / scales / rope
};

// What one layer's forward keeps for the backward (model/train_step.h); filled only when
// LayerContext::tape is set. Inputs of in-place ops are copied before they change.
struct MlpTape {
  Tensor x8, xs;   // act_quant of the input (the GEMMs' A operand) [M, H], [M, ceil(H/128)]
  Tensor g, u, h;  // bf16 [M, I]: gate, up, silu(gate)*up
};
// The indexer's forward, for its KL loss (ForwardOptions::score_indexer).
struct IndexerTape {
  Tensor q8, qs;    // act_quant of the rotated queries [S, ih, D], [S, ih]
  Tensor k8, ks;    // of the rotated keys [S, D], [S]
  Tensor k0;        // k_norm input (wk output) bf16 [S, D]
  Tensor w;         // weights_proj output before indexer_weights, fp32 [S, ih]
  Tensor scores;    // [S, max_end] fp32 logits
  Tensor topk;      // [S, index_topk] the indexer's own top-k (logical positions, -1 = none)
};
struct LayerTape {
  Tensor h_in, res_in;            // attn_norm inputs (res_in empty for the first block)
  Tensor xn;                      // attn_norm output
  Tensor qa, qr, q, kv, craw;     // MLA projections (q and kv after RoPE), craw = kv_norm input
  Tensor q_abs, q_pe, o_lat, o;   // absorbed attention
  Tensor idx;                     // [S, K] logical key positions used (after replay / dense)
  Tensor phys;                    // [S, K] their physical cache rows
  int64_t K = 0;
  Tensor attn_out, res_mid;       // ffn_norm inputs (res_mid = the residual before the add)
  Tensor xn2;                     // ffn_norm output
  MlpTape dense, shared;
  // MoE: gate logits, routing, grouped expert intermediates (rows in expert order).
  Tensor logits, experts, weights, offsets, rows, row_w, pos;
  MlpTape routed;                 // x8/xs = act_quant of xn2 (token rows), g/u/h grouped [R, I]
  Tensor routed_out;              // [R, H] expert outputs (bf16)
  Tensor index_scores;            // [S, max_end] fp32 indexer logits (when scored)
  IndexerTape indexer;            // when ForwardOptions::score_indexer
};

struct LayerContext {
  const ModelConfig& cfg;
  Backend& be;
  Model::Rows& rows;
  int64_t S;
  const float* rope_cos;     // [>= max position + 1, rope/2]
  const float* rope_sin;
  const ForwardOptions& opt;
  LayerTape* tape = nullptr;  // training: keep what the backward needs
};

// h: [S, H] bf16 block input (becomes the block output); residual: bf16 [S, H] residual stream
// (undefined before layer 0).
void run_layer(const LayerContext& ctx, const LayerWeights& w, int64_t layer, Tensor& h, Tensor& residual);

// act_quant + fp8_gemm: y[M, out] (row stride ldy) = x[M, in] @ W^T, spec §3.2.
void fp8_linear(Backend& be, const bf16* x, int64_t M, const Fp8Matrix& W, bf16* y, int64_t ldy);
// A copy of a backend tensor in fresh backend memory.
Tensor clone(Backend& be, const Tensor& t);
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
