// Backward of one decoder block (model/backward.cc) and of its pieces, on the tape its forward
// left (model/layer.h). Internal to model/; driven by TrainStep (model/train_step.h).
#pragma once
#include <string>

#include "model/layer.h"
#include "model/params.h"
#include "ops/grad.h"

namespace dsa {

struct GradContext {
  const ModelConfig& cfg;
  Backend& be;
  Params& params;
  const Model::Rows& rows;  // the rows of the forward call (positions, cache rows)
  int64_t S;
  const float* rope_cos;
  const float* rope_sin;
  const ops::GradTable& g() const { return *be.ops().grad; }
  // Gradient buffer of parameter "model.layers.{layer}.{name}" (or a full name when layer < 0).
  float* grad(int64_t layer, const std::string& name) const;
};

// Backend fp32 tensor, zero-filled.
Tensor zeros_f32(Backend& be, Shape shape);

// C (+)= op(A) · op(B) through the backend's gemm (ops/grad.h); a thin argument adapter.
struct MatMul {
  const void* a;
  ops::GemmType ta;
  bool trans_a;
  int64_t lda;
  const void* b;
  ops::GemmType tb;
  bool trans_b;
  int64_t ldb;
  float* c;
  int64_t ldc, M, N, K;
  bool accumulate;
  int64_t batch = 1, stride_a = 0, stride_b = 0, stride_c = 0;
};
void matmul(Backend& be, const MatMul& m);

// Backward of an FP8 linear y[M, out] = Q(x) Q(W)^T (docs/training.md §3): dx (+)= bf16(dy) · Q(W)
// (skipped when dx is null), dW += bf16(dy)^T · Q(x). x given as act_quant output (x8, xs) or bf16.
void fp8_linear_bwd_q(const GradContext& c, const fp8* x8, const float* xs, int64_t M, const Fp8Matrix& W,
                      const float* dy, float* dx, bool dx_accumulate, float* dW);
void fp8_linear_bwd(const GradContext& c, const bf16* x, int64_t M, const Fp8Matrix& W, const float* dy, float* dx,
                    bool dx_accumulate, float* dW);

// Block backward. d: [S, H] fp32, on entry the gradient of the block's outputs (the hidden state
// and the residual stream receive the same gradient at every block boundary), on return that of
// its inputs. d_scores: [S, E] gradient on the gate's sigmoid scores (balance loss) or nullptr.
void layer_bwd(const GradContext& c, const LayerWeights& w, int64_t layer, const LayerTape& t, Tensor& d,
               const float* d_scores);

// grad_rows[tokens[i]] += d[i] for every row i, summed per token in row order (embedding backward).
void scatter_rows_by_id(Backend& be, const std::vector<int32_t>& ids, const float* d, int64_t H, float* grad_rows);

}  // namespace dsa
