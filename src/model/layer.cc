// Decoder block: attn_norm → MLA (+indexer) → ffn_norm → MLP/MoE, residual stream in bf16.
#include "model/layer.h"

#include <fmt/format.h>

namespace dsa {

void fp8_linear(const ops::OpTable& ops, const bf16* x, int64_t M, const Fp8Matrix& W, bf16* y, int64_t ldy) {
  const int64_t K = W.in, kb = ops::ceil_div(K, ops::kBlock);
  std::vector<fp8> q(static_cast<size_t>(M * K));
  std::vector<float> s(static_cast<size_t>(M * kb));
  ops.act_quant({x, q.data(), s.data(), M, K});
  ops.fp8_gemm({q.data(), s.data(), W.w.ptr<fp8>(), W.s.ptr<float>(), y, M, W.out, K, ldy});
}

void dump_bf16(const LayerContext& ctx, int64_t layer, const char* name, const bf16* data, const Shape& row_shape) {
  if (!ctx.opt.dump) return;
  const std::string full = fmt::format("l{}.{}", layer, name);
  if (!ctx.opt.dump->wants(full)) return;
  const int64_t n = ctx.S * shape_numel(row_shape);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = bf16_to_f32(data[i]);
  ctx.opt.dump->add(full, row_shape, v.data(), ctx.S);
}

void run_layer(const LayerContext& ctx, const LayerWeights& w, int64_t layer, Tensor& h, Tensor& residual) {
  const int64_t S = ctx.S, H = ctx.cfg.hidden_size;
  const float eps = float(ctx.cfg.rms_norm_eps);
  Tensor xn = Tensor::empty(DType::BF16, {S, H});
  if (!residual.data) {
    residual = Tensor::empty(DType::BF16, {S, H});
    std::copy(h.ptr<bf16>(), h.ptr<bf16>() + S * H, residual.ptr<bf16>());
    ctx.ops.rms_norm({h.ptr<bf16>(), nullptr, w.attn_norm.ptr<float>(), xn.ptr<bf16>(), S, H, eps});
  } else {
    ctx.ops.rms_norm({h.ptr<bf16>(), residual.ptr<bf16>(), w.attn_norm.ptr<float>(), xn.ptr<bf16>(), S, H, eps});
  }
  dump_bf16(ctx, layer, "attn_norm", xn.ptr<bf16>(), {H});
  Tensor a = run_attention(ctx, w, layer, xn);
  dump_bf16(ctx, layer, "attn_out", a.ptr<bf16>(), {H});
  ctx.ops.rms_norm({a.ptr<bf16>(), residual.ptr<bf16>(), w.ffn_norm.ptr<float>(), xn.ptr<bf16>(), S, H, eps});
  dump_bf16(ctx, layer, "ffn_norm", xn.ptr<bf16>(), {H});
  dump_bf16(ctx, layer, "residual", residual.ptr<bf16>(), {H});
  h = run_ffn(ctx, w, layer, xn);
  dump_bf16(ctx, layer, "ffn_out", h.ptr<bf16>(), {H});
}

}  // namespace dsa
