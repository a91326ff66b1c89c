// Backward of a V3.2 decoder block on its tape (docs/training.md §3): MLA in the absorbed form
// (wo, the per-head W_UV / W_UK products, sparse attention, the latent's kv_norm and RoPE, wq_b,
// q_norm, the down projections), the dense MLP, and the MoE (shared expert, routed experts per
// group, combine weights through the gate). The indexer gets nothing from the LM loss.
#include "model/backward.h"

#include <fmt/format.h>

#include <unordered_map>

namespace dsa {

using ops::GemmType;

float* GradContext::grad(int64_t layer, const std::string& name) const {
  return params.grad(layer < 0 ? name : fmt::format("model.layers.{}.{}", layer, name));
}

Tensor zeros_f32(Backend& be, Shape shape) {
  Tensor t = be.alloc(DType::F32, std::move(shape));
  be.ops().mem.fill(t.data, 0, t.nbytes());
  return t;
}

void matmul(Backend& be, const MatMul& m) {
  be.ops().grad->gemm({m.a, m.b, m.c, m.ta, m.tb, m.M, m.N, m.K, m.lda, m.ldb, m.ldc, m.trans_a, m.trans_b,
                       m.accumulate, m.batch, m.stride_a, m.stride_b, m.stride_c});
}

void fp8_linear_bwd_q(const GradContext& c, const fp8* x8, const float* xs, int64_t M, const Fp8Matrix& W,
                      const float* dy, float* dx, bool dx_accumulate, float* dW) {
  if (M == 0) return;
  Backend& be = c.be;
  const int64_t N = W.out, K = W.in;
  Tensor dyb = be.alloc(DType::BF16, {M, N});
  be.ops().convert({dy, dyb.data, M * N, false});
  if (dx) {
    Tensor wdq = be.alloc(DType::BF16, {N, K});
    c.g().dequant({W.w.ptr<fp8>(), W.s.ptr<float>(), wdq.data, N, K, ops::kBlock, true});
    matmul(be, {dyb.data, GemmType::BF16, false, N, wdq.data, GemmType::BF16, false, K, dx, K, M, K, N, dx_accumulate});
  }
  if (dW) {
    Tensor xdq = be.alloc(DType::BF16, {M, K});
    c.g().dequant({x8, xs, xdq.data, M, K, 1, true});
    matmul(be, {dyb.data, GemmType::BF16, true, N, xdq.data, GemmType::BF16, false, K, dW, K, N, K, M, true});
  }
}

void fp8_linear_bwd(const GradContext& c, const bf16* x, int64_t M, const Fp8Matrix& W, const float* dy, float* dx,
                    bool dx_accumulate, float* dW) {
  const int64_t K = W.in;
  Tensor q = c.be.alloc(DType::F8_E4M3, {M, K}), s = c.be.alloc(DType::F32, {M, ops::ceil_div(K, ops::kBlock)});
  c.be.ops().act_quant({x, q.ptr<fp8>(), s.ptr<float>(), M, K});
  fp8_linear_bwd_q(c, q.ptr<fp8>(), s.ptr<float>(), M, W, dy, dx, dx_accumulate, dW);
}

void scatter_rows_by_id(Backend& be, const std::vector<int32_t>& ids, const float* d, int64_t H, float* grad_rows) {
  std::map<int32_t, std::vector<int32_t>> by_id;
  for (size_t i = 0; i < ids.size(); ++i) by_id[ids[i]].push_back(int32_t(i));
  std::vector<int32_t> dst, ptr = {0}, src;
  for (auto& [id, rows] : by_id) {
    dst.push_back(id);
    src.insert(src.end(), rows.begin(), rows.end());
    ptr.push_back(int32_t(src.size()));
  }
  if (dst.empty()) return;
  const Tensor dd = be.upload(dst, DType::I32), pd = be.upload(ptr, DType::I32), sd = be.upload(src, DType::I32);
  be.ops().grad->scatter_add_rows({grad_rows, d, dd.ptr<int32_t>(), pd.ptr<int32_t>(), sd.ptr<int32_t>(),
                                   int64_t(dst.size()), H});
}

namespace {

// One SwiGLU MLP (dense layer or shared expert) on its tape; dx accumulates.
void mlp_bwd(const GradContext& c, const Mlp& m, const MlpTape& t, int64_t layer, const std::string& pre,
             const float* dy, int64_t M, float* dx) {
  Backend& be = c.be;
  const int64_t I = m.gate.out;
  Tensor dh = be.alloc(DType::F32, {M, I}), dg = be.alloc(DType::F32, {M, I}), du = be.alloc(DType::F32, {M, I});
  fp8_linear_bwd(c, t.h.ptr<bf16>(), M, m.down, dy, dh.ptr<float>(), false, c.grad(layer, pre + "down_proj.weight"));
  c.g().silu_mul_bwd({t.g.ptr<bf16>(), t.u.ptr<bf16>(), dh.ptr<float>(), dg.ptr<float>(), du.ptr<float>(), M, I});
  fp8_linear_bwd_q(c, t.x8.ptr<fp8>(), t.xs.ptr<float>(), M, m.gate, dg.ptr<float>(), dx, true,
                   c.grad(layer, pre + "gate_proj.weight"));
  fp8_linear_bwd_q(c, t.x8.ptr<fp8>(), t.xs.ptr<float>(), M, m.up, du.ptr<float>(), dx, true,
                   c.grad(layer, pre + "up_proj.weight"));
}

void moe_bwd(const GradContext& c, const LayerWeights& w, int64_t layer, const LayerTape& t, const float* dy,
             float* dx, const float* d_scores) {
  Backend& be = c.be;
  const ModelConfig& cfg = c.cfg;
  const int64_t S = c.S, H = cfg.hidden_size, E = cfg.n_routed_experts, k = cfg.num_experts_per_tok, R = S * k;
  const int64_t I = w.experts.at(0).gate.out, kb = ops::ceil_div(H, ops::kBlock);
  if (w.has_shared) mlp_bwd(c, w.shared, t.shared, layer, "mlp.shared_experts.", dy, S, dx);
  // Combine: acc[s] += y[p] * w[p].
  Tensor d_out = be.alloc(DType::F32, {R, H}), d_rw = be.alloc(DType::F32, {R});
  c.g().moe_combine_bwd({dy, t.routed_out.ptr<bf16>(), t.pos.ptr<int32_t>(), t.row_w.ptr<float>(), d_out.ptr<float>(),
                         d_rw.ptr<float>(), S, k, H, R});
  const std::vector<int32_t> off = be.to_host<int32_t>(t.offsets), rows = be.to_host<int32_t>(t.rows),
                             pos = be.to_host<int32_t>(t.pos);
  // Each grouped row's activation (token row rows[r] of act_quant(xn2)).
  Tensor xg8 = be.alloc(DType::F8_E4M3, {R, H}), xgs = be.alloc(DType::F32, {R, kb});
  {
    std::vector<int64_t> o8(static_cast<size_t>(R)), os(static_cast<size_t>(R));
    for (int64_t r = 0; r < R; ++r) o8[r] = int64_t(rows[r]) * H, os[r] = int64_t(rows[r]) * kb * 4;
    const Tensor d8 = be.upload(o8, DType::I64), ds = be.upload(os, DType::I64);
    be.ops().copy_rows({t.routed.x8.ptr<uint8_t>(), xg8.ptr<uint8_t>(), d8.ptr<int64_t>(), nullptr, 0, H, H, R});
    be.ops().copy_rows({t.routed.xs.ptr<uint8_t>(), xgs.ptr<uint8_t>(), ds.ptr<int64_t>(), nullptr, 0, kb * 4, kb * 4, R});
  }
  Tensor dh = be.alloc(DType::F32, {R, I}), dg = be.alloc(DType::F32, {R, I}), du = be.alloc(DType::F32, {R, I});
  Tensor dxr = be.alloc(DType::F32, {R, H});
  auto each_expert = [&](auto&& fn) {
    for (int64_t e = 0; e < E; ++e)
      if (off[e + 1] > off[e]) fn(e, int64_t(off[e]), int64_t(off[e + 1] - off[e]));
  };
  each_expert([&](int64_t e, int64_t r0, int64_t n) {
    fp8_linear_bwd(c, t.routed.h.ptr<bf16>() + r0 * I, n, w.experts[e].down, d_out.ptr<float>() + r0 * H,
                   dh.ptr<float>() + r0 * I, false, c.grad(layer, fmt::format("mlp.experts.{}.down_proj.weight", e)));
  });
  c.g().silu_mul_bwd({t.routed.g.ptr<bf16>(), t.routed.u.ptr<bf16>(), dh.ptr<float>(), dg.ptr<float>(),
                      du.ptr<float>(), R, I});
  each_expert([&](int64_t e, int64_t r0, int64_t n) {
    const fp8* x8 = xg8.ptr<fp8>() + r0 * H;
    const float* xs = xgs.ptr<float>() + r0 * kb;
    fp8_linear_bwd_q(c, x8, xs, n, w.experts[e].gate, dg.ptr<float>() + r0 * I, dxr.ptr<float>() + r0 * H, false,
                     c.grad(layer, fmt::format("mlp.experts.{}.gate_proj.weight", e)));
    fp8_linear_bwd_q(c, x8, xs, n, w.experts[e].up, du.ptr<float>() + r0 * I, dxr.ptr<float>() + r0 * H, true,
                     c.grad(layer, fmt::format("mlp.experts.{}.up_proj.weight", e)));
  });
  // Grouped rows back to their tokens, each token's choices in order.
  {
    std::vector<int32_t> dst(static_cast<size_t>(S)), ptr = {0}, src;
    for (int64_t s = 0; s < S; ++s) {
      dst[s] = int32_t(s);
      for (int64_t j = 0; j < k; ++j)
        if (pos[s * k + j] >= 0) src.push_back(pos[s * k + j]);
      ptr.push_back(int32_t(src.size()));
    }
    const Tensor dd = be.upload(dst, DType::I32), pd = be.upload(ptr, DType::I32), sd = be.upload(src, DType::I32);
    c.g().scatter_add_rows({dx, dxr.ptr<float>(), dd.ptr<int32_t>(), pd.ptr<int32_t>(), sd.ptr<int32_t>(), S, H});
  }
  // Gate: combine weights -> sigmoid scores -> logits = fp32(xn2) gate_w^T.
  const std::vector<float> drw = be.to_host<float>(d_rw);
  std::vector<float> dw(size_t(S * k), 0.0f);
  for (int64_t i = 0; i < S * k; ++i)
    if (pos[i] >= 0) dw[i] = drw[pos[i]];
  const Tensor dw_dev = be.upload(dw, DType::F32);
  Tensor dl = be.alloc(DType::F32, {S, E});
  c.g().moe_gate_bwd({t.logits.ptr<float>(), t.experts.ptr<int32_t>(), dw_dev.ptr<float>(), d_scores, dl.ptr<float>(),
                      S, E, k, cfg.norm_topk_prob, float(cfg.routed_scaling_factor)});
  matmul(be, {dl.data, GemmType::F32, false, E, w.gate_w.data, GemmType::BF16, false, H, dx, H, S, H, E, true});
  matmul(be, {dl.data, GemmType::F32, true, E, t.xn2.data, GemmType::BF16, false, H, c.grad(layer, "mlp.gate.weight"),
              H, E, H, S, true});
}

// Attention: d_a = gradient of the o_proj output; d_xn accumulates.
void attn_bwd(const GradContext& c, const LayerWeights& w, int64_t layer, const LayerTape& t, const float* d_a,
              float* d_xn) {
  Backend& be = c.be;
  const ops::OpTable& ops = be.ops();
  const ModelConfig& cfg = c.cfg;
  const int64_t S = c.S, nh = cfg.num_attention_heads, nope = cfg.qk_nope_head_dim, R = cfg.qk_rope_head_dim;
  const int64_t dqk = cfg.qk_head_dim(), dv = cfg.v_head_dim, L = cfg.kv_lora_rank, qlr = cfg.q_lora_rank,
                K = t.K, wh = (nope + dv) * L;
  const float eps = float(cfg.rms_norm_eps);
  const int32_t* pos = c.rows.pos_dev.ptr<int32_t>();
  KvCache& kv = *c.rows.kv;
  // out = wo(o)
  Tensor d_o = be.alloc(DType::F32, {S, nh * dv});
  fp8_linear_bwd(c, t.o.ptr<bf16>(), S, w.o, d_a, d_o.ptr<float>(), false, c.grad(layer, "self_attn.o_proj.weight"));
  // o[s,h] = o_lat[s,h] · W_UV[h]^T, W_UV[h] = rows nope..nope+dv of head h in wkv_b [nh, nope+dv, L].
  const bf16* wkv = w.wkv_b_bf16.ptr<bf16>();
  float* d_wkv = c.grad(layer, "self_attn.kv_b_proj.weight");  // same layout; STE through the dequantisation
  Tensor d_ol = be.alloc(DType::F32, {S, nh, L});
  matmul(be, {d_o.data, GemmType::F32, false, nh * dv, wkv + nope * L, GemmType::BF16, false, L, d_ol.ptr<float>(),
              nh * L, S, L, dv, false, nh, dv, wh, L});
  matmul(be, {d_o.data, GemmType::F32, true, nh * dv, t.o_lat.data, GemmType::BF16, false, nh * L, d_wkv + nope * L, L,
              dv, L, S, true, nh, dv, L, wh});
  // Sparse attention over the latents, phase 1 (queries) then 2 (keys = this call's token rows).
  Tensor d_qa = be.alloc(DType::F32, {S, nh, L}), d_qp = be.alloc(DType::F32, {S, nh, R});
  Tensor P = be.alloc(DType::F32, {S, nh, K}), G = be.alloc(DType::F32, {S, nh, K});
  c.g().sparse_mla_bwd_q({t.q_abs.ptr<bf16>(), t.q_pe.ptr<bf16>(), kv.latent(layer), t.phys.ptr<int32_t>(),
                          d_ol.ptr<float>(), d_qa.ptr<float>(), d_qp.ptr<float>(), P.ptr<float>(), G.ptr<float>(), S,
                          nh, kv.capacity() * kv.page_size(), K, kv.latent_layout(), float(cfg.softmax_scale())});
  Tensor d_kv = be.alloc(DType::F32, {S, L + R});
  {
    std::unordered_map<int64_t, int32_t> token_of_row;
    for (int64_t s = 0; s < S; ++s) token_of_row[c.rows.write_row[s]] = int32_t(s);
    const std::vector<int32_t> phys = be.to_host<int32_t>(t.phys);
    std::vector<std::vector<int32_t>> slots(static_cast<size_t>(S));
    for (int64_t e = 0; e < S * K; ++e) {
      if (phys[e] < 0) continue;
      auto it = token_of_row.find(phys[e]);
      DSA_CHECK(it != token_of_row.end(), "training: layer {} selects cache row {} that this batch did not write",
                layer, phys[e]);
      slots[it->second].push_back(int32_t(e));
    }
    std::vector<int32_t> ptr = {0}, list;
    for (auto& v : slots) {
      list.insert(list.end(), v.begin(), v.end());
      ptr.push_back(int32_t(list.size()));
    }
    if (list.empty()) list.push_back(0);
    const Tensor pd = be.upload(ptr, DType::I32), ld = be.upload(list, DType::I32);
    c.g().sparse_mla_bwd_kv({t.q_abs.ptr<bf16>(), t.q_pe.ptr<bf16>(), d_ol.ptr<float>(), P.ptr<float>(),
                             G.ptr<float>(), pd.ptr<int32_t>(), ld.ptr<int32_t>(), d_kv.ptr<float>(), S, S, nh, K, L, R});
  }
  // Latent: the FP8 round trip is straight-through; c = kv_norm(craw); k_pe = rope(kv[:, L:]).
  {
    Tensor d_c = be.alloc(DType::F32, {S, L}), d_craw = be.alloc(DType::F32, {S, L});
    copy_slice(be, d_kv.data, (L + R) * 4, d_c.data, L * 4, L * 4, S);
    c.g().rms_norm_bwd({t.craw.ptr<bf16>(), nullptr, w.kv_norm.ptr<float>(), d_c.ptr<float>(), nullptr,
                        d_craw.ptr<float>(), c.grad(layer, "self_attn.kv_a_layernorm.weight"), S, L, eps});
    copy_slice(be, d_craw.data, L * 4, d_kv.data, (L + R) * 4, L * 4, S);
  }
  c.g().rope_bwd({d_kv.ptr<float>(), pos, c.rope_cos, c.rope_sin, S, 1, L + R, L, R, true});
  fp8_linear_bwd(c, t.xn.ptr<bf16>(), S, w.kv_a, d_kv.ptr<float>(), d_xn, true,
                 c.grad(layer, "self_attn.kv_a_proj_with_mqa.weight"));
  // Queries: q_abs[s,h] = q_nope[s,h] · W_UK[h] (W_UK[h] = rows 0..nope of head h); q_pe -> rope.
  Tensor d_q = be.alloc(DType::F32, {S, nh, dqk});
  matmul(be, {d_qa.data, GemmType::F32, false, nh * L, wkv, GemmType::BF16, true, L, d_q.ptr<float>(), nh * dqk, S, nope,
              L, false, nh, L, wh, dqk});
  matmul(be, {t.q.data, GemmType::BF16, true, nh * dqk, d_qa.data, GemmType::F32, false, nh * L, d_wkv, L, nope, L, S,
              true, nh, dqk, L, wh});
  copy_slice(be, d_qp.data, R * 4, d_q.ptr<float>() + nope, dqk * 4, R * 4, S * nh);
  c.g().rope_bwd({d_q.ptr<float>(), pos, c.rope_cos, c.rope_sin, S, nh, dqk, nope, R, true});
  Tensor d_qr = be.alloc(DType::F32, {S, qlr}), d_qa2 = be.alloc(DType::F32, {S, qlr});
  fp8_linear_bwd(c, t.qr.ptr<bf16>(), S, w.q_b, d_q.ptr<float>(), d_qr.ptr<float>(), false,
                 c.grad(layer, "self_attn.q_b_proj.weight"));
  c.g().rms_norm_bwd({t.qa.ptr<bf16>(), nullptr, w.q_norm.ptr<float>(), d_qr.ptr<float>(), nullptr, d_qa2.ptr<float>(),
                      c.grad(layer, "self_attn.q_a_layernorm.weight"), S, qlr, eps});
  fp8_linear_bwd(c, t.xn.ptr<bf16>(), S, w.q_a, d_qa2.ptr<float>(), d_xn, true, c.grad(layer, "self_attn.q_a_proj.weight"));
  (void)ops;
}

}  // namespace

void layer_bwd(const GradContext& c, const LayerWeights& w, int64_t layer, const LayerTape& t, Tensor& d,
               const float* d_scores) {
  Backend& be = c.be;
  const int64_t S = c.S, H = c.cfg.hidden_size;
  const float eps = float(c.cfg.rms_norm_eps);
  Tensor d_xn2 = zeros_f32(be, {S, H});
  if (w.moe) moe_bwd(c, w, layer, t, d.ptr<float>(), d_xn2.ptr<float>(), d_scores);
  else mlp_bwd(c, w.dense, t.dense, layer, "mlp.", d.ptr<float>(), S, d_xn2.ptr<float>());
  // ffn_norm over r2 = attn_out + res_mid; the residual output's gradient is d as well.
  Tensor d_r2 = be.alloc(DType::F32, {S, H});
  c.g().rms_norm_bwd({t.attn_out.ptr<bf16>(), t.res_mid.ptr<bf16>(), w.ffn_norm.ptr<float>(), d_xn2.ptr<float>(),
                      d.ptr<float>(), d_r2.ptr<float>(), c.grad(layer, "post_attention_layernorm.weight"), S, H, eps});
  Tensor d_xn = zeros_f32(be, {S, H});
  attn_bwd(c, w, layer, t, d_r2.ptr<float>(), d_xn.ptr<float>());
  Tensor d_r1 = be.alloc(DType::F32, {S, H});
  c.g().rms_norm_bwd({t.h_in.ptr<bf16>(), t.res_in.data ? t.res_in.ptr<bf16>() : nullptr, w.attn_norm.ptr<float>(),
                      d_xn.ptr<float>(), d_r2.ptr<float>(), d_r1.ptr<float>(), c.grad(layer, "input_layernorm.weight"),
                      S, H, eps});
  d = d_r1;
}

}  // namespace dsa
