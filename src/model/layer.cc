// Decoder block: attn_norm → MLA (+indexer) → ffn_norm → MLP/MoE, residual stream in bf16.
#include "model/layer.h"

#include <fmt/format.h>

namespace dsa {

void fp8_linear(Backend& be, const bf16* x, int64_t M, const Fp8Matrix& W, bf16* y, int64_t ldy) {
  const int64_t K = W.in, kb = ops::ceil_div(K, ops::kBlock);
  Tensor q = be.alloc(DType::F8_E4M3, {M, K});
  Tensor s = be.alloc(DType::F32, {M, kb});
  be.ops().act_quant({x, q.ptr<fp8>(), s.ptr<float>(), M, K});
  be.ops().fp8_gemm({q.ptr<fp8>(), s.ptr<float>(), W.w.ptr<fp8>(), W.s.ptr<float>(), y, M, W.out, K, ldy});
}

Tensor clone(Backend& be, const Tensor& t) {
  Tensor c = be.alloc(t.dtype, t.shape);
  be.ops().mem.copy(c.data, t.data, t.nbytes(), ops::CopyKind::kDeviceToDevice);
  return c;
}

void copy_slice(Backend& be, const void* src, int64_t src_stride, void* dst, int64_t dst_stride, int64_t bytes,
                int64_t rows) {
  be.ops().copy_rows({static_cast<const uint8_t*>(src), static_cast<uint8_t*>(dst), nullptr, nullptr, src_stride,
                      dst_stride, bytes, rows});
}

static void dump_rows(const LayerContext& ctx, int64_t layer, const char* name, const void* data,
                      const Shape& row_shape, bool is_bf16) {
  if (!ctx.opt.dump) return;
  const std::string full = fmt::format("l{}.{}", layer, name);
  if (!ctx.opt.dump->wants(full)) return;
  const int64_t n = ctx.S * shape_numel(row_shape);
  std::vector<float> v(static_cast<size_t>(n));
  if (is_bf16) {
    std::vector<bf16> b(static_cast<size_t>(n));
    ctx.be.ops().mem.copy(b.data(), data, size_t(n) * 2, ops::CopyKind::kDeviceToHost);
    for (int64_t i = 0; i < n; ++i) v[i] = bf16_to_f32(b[i]);
  } else {
    ctx.be.ops().mem.copy(v.data(), data, size_t(n) * 4, ops::CopyKind::kDeviceToHost);
  }
  ctx.opt.dump->add(full, row_shape, v.data(), ctx.S);
}

void dump_bf16(const LayerContext& ctx, int64_t layer, const char* name, const bf16* data, const Shape& row_shape) {
  dump_rows(ctx, layer, name, data, row_shape, true);
}

void dump_f32(const LayerContext& ctx, int64_t layer, const char* name, const float* data, const Shape& row_shape) {
  dump_rows(ctx, layer, name, data, row_shape, false);
}

void run_layer(const LayerContext& ctx, const LayerWeights& w, int64_t layer, Tensor& h, Tensor& residual) {
  const int64_t S = ctx.S, H = ctx.cfg.hidden_size;
  const float eps = float(ctx.cfg.rms_norm_eps);
  const ops::OpTable& ops = ctx.be.ops();
  Tensor xn = ctx.be.alloc(DType::BF16, {S, H});
  LayerTape* tape = ctx.tape;
  if (tape) {
    tape->h_in = h;
    if (residual.data) tape->res_in = clone(ctx.be, residual);
  }
  if (!residual.data) {
    residual = ctx.be.alloc(DType::BF16, {S, H});
    ops.mem.copy(residual.data, h.data, size_t(S * H * 2), ops::CopyKind::kDeviceToDevice);
    ops.rms_norm({h.ptr<bf16>(), nullptr, w.attn_norm.ptr<float>(), xn.ptr<bf16>(), S, H, eps});
  } else {
    ops.rms_norm({h.ptr<bf16>(), residual.ptr<bf16>(), w.attn_norm.ptr<float>(), xn.ptr<bf16>(), S, H, eps});
  }
  dump_bf16(ctx, layer, "attn_norm", xn.ptr<bf16>(), {H});
  Tensor a = run_attention(ctx, w, layer, xn);
  dump_bf16(ctx, layer, "attn_out", a.ptr<bf16>(), {H});
  if (tape) {
    tape->xn = clone(ctx.be, xn);  // xn is reused for the ffn_norm output below
    tape->attn_out = a;
    tape->res_mid = clone(ctx.be, residual);
  }
  ops.rms_norm({a.ptr<bf16>(), residual.ptr<bf16>(), w.ffn_norm.ptr<float>(), xn.ptr<bf16>(), S, H, eps});
  dump_bf16(ctx, layer, "ffn_norm", xn.ptr<bf16>(), {H});
  dump_bf16(ctx, layer, "residual", residual.ptr<bf16>(), {H});
  if (tape) tape->xn2 = xn;
  h = run_ffn(ctx, w, layer, xn);
  dump_bf16(ctx, layer, "ffn_out", h.ptr<bf16>(), {H});
}

}  // namespace dsa
