// Feed-forward (spec §8): dense SwiGLU MLP, and the MoE (sigmoid gate with correction bias and
// group-limited routing, routed experts combined in fp32, shared expert added). The routed
// experts are grouped on the backend (moe_route → grouped GEMMs → moe_combine): no routing data
// comes back to the host and the launch count does not grow with the number of active experts.
// Routing decisions reach the host only for record / dump / replay.
#include <cmath>
#include <fmt/format.h>

#include "model/layer.h"

namespace dsa {

namespace {

// y = down(bf16(silu(gate x) * up x)) for rows of x already act_quant'ed (xq, xs): [M, H] → y.
void mlp_q(Backend& be, const Mlp& m, const fp8* xq, const float* xs, int64_t M, bf16* y, MlpTape* tape) {
  const int64_t I = m.gate.out, H = m.down.out, K = m.gate.in;
  Tensor g = be.alloc(DType::BF16, {M, I}), u = be.alloc(DType::BF16, {M, I}), h = be.alloc(DType::BF16, {M, I});
  be.ops().fp8_gemm({xq, xs, m.gate.w.ptr<fp8>(), m.gate.s.ptr<float>(), g.ptr<bf16>(), M, I, K, I});
  be.ops().fp8_gemm({xq, xs, m.up.w.ptr<fp8>(), m.up.s.ptr<float>(), u.ptr<bf16>(), M, I, K, I});
  be.ops().silu_mul({g.ptr<bf16>(), u.ptr<bf16>(), h.ptr<bf16>(), M, I});
  fp8_linear(be, h.ptr<bf16>(), M, m.down, y, H);
  if (tape) {
    tape->g = g;
    tape->u = u;
    tape->h = h;
  }
}

// act_quant is per row, so gate and up share one quantisation of x (same bits as two).
void mlp(Backend& be, const Mlp& m, const bf16* x, int64_t M, bf16* y, MlpTape* tape) {
  const int64_t K = m.gate.in;
  Tensor q = be.alloc(DType::F8_E4M3, {M, K}), s = be.alloc(DType::F32, {M, ops::ceil_div(K, ops::kBlock)});
  be.ops().act_quant({x, q.ptr<fp8>(), s.ptr<float>(), M, K});
  mlp_q(be, m, q.ptr<fp8>(), s.ptr<float>(), M, y, tape);
  if (tape) {
    tape->x8 = q;
    tape->xs = s;
  }
}

// Replayed expert choices (spec §8.2 step 5: weights recomputed from our own unbiased sigmoid
// scores) written into the backend's routing arrays. A host step: replay is a debugging path.
void replay_experts(const LayerContext& ctx, int64_t layer, const Tensor& logits, Tensor& experts_dev,
                    Tensor& wts_dev) {
  const ModelConfig& c = ctx.cfg;
  const int64_t S = ctx.S, E = c.n_routed_experts, k = c.num_experts_per_tok;
  const auto& r = ctx.opt.replay->layers[layer].experts;
  DSA_CHECK(int64_t(r.size()) == S * k, "replay: layer {} experts has {} entries, expected {}", layer, r.size(), S * k);
  const std::vector<float> lg = ctx.be.to_host<float>(logits);
  std::vector<float> wts(size_t(S * k));
  for (int64_t s = 0; s < S; ++s) {
    float sum = 0;
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = r[s * k + j];
      DSA_CHECK(e >= 0 && e < E, "replay: layer {} expert id {} out of range", layer, e);
      const float sc = 1.0f / (1.0f + std::exp(-lg[s * E + e]));
      wts[s * k + j] = sc;
      sum += sc;
    }
    for (int64_t j = 0; j < k; ++j)
      wts[s * k + j] = (c.norm_topk_prob ? wts[s * k + j] / sum : wts[s * k + j]) * float(c.routed_scaling_factor);
  }
  const ops::Memory& mem = ctx.be.ops().mem;
  mem.copy(experts_dev.data, r.data(), r.size() * 4, ops::CopyKind::kHostToDevice);
  mem.copy(wts_dev.data, wts.data(), wts.size() * 4, ops::CopyKind::kHostToDevice);
}

}  // namespace

void build_expert_tables(Backend& be, LayerWeights& w) {
  if (!w.moe) return;
  Fp8Matrix Mlp::*const mats[3] = {&Mlp::gate, &Mlp::up, &Mlp::down};
  const size_t E = w.experts.size();
  std::vector<const void*> pw(E), ps(E);
  for (int i = 0; i < 3; ++i) {
    for (size_t e = 0; e < E; ++e) {
      pw[e] = (w.experts[e].*mats[i]).w.data;
      ps[e] = (w.experts[e].*mats[i]).s.data;
    }
    static_assert(sizeof(const void*) == 8, "pointer tables are stored as I64");
    w.expert_w[i] = be.upload(pw.data(), DType::I64, {int64_t(E)});
    w.expert_s[i] = be.upload(ps.data(), DType::I64, {int64_t(E)});
  }
}

Tensor run_ffn(const LayerContext& ctx, const LayerWeights& w, int64_t layer, const Tensor& xn) {
  const ModelConfig& c = ctx.cfg;
  Backend& be = ctx.be;
  const ops::OpTable& ops = be.ops();
  const int64_t S = ctx.S, H = c.hidden_size;
  Tensor y = be.alloc(DType::BF16, {S, H});
  if (!w.moe) {
    mlp(be, w.dense, xn.ptr<bf16>(), S, y.ptr<bf16>(), ctx.tape ? &ctx.tape->dense : nullptr);
    return y;
  }
  const int64_t E = c.n_routed_experts, k = c.num_experts_per_tok;
  Tensor x32 = be.alloc(DType::F32, {S, H}), logits = be.alloc(DType::F32, {S, E});
  ops.convert({xn.data, x32.data, S * H, true});
  ops.linear_f32({x32.ptr<float>(), w.gate_w.ptr<bf16>(), logits.ptr<float>(), S, E, H});
  Tensor experts_dev = be.alloc(DType::I32, {S, k}), wts_dev = be.alloc(DType::F32, {S, k});
  Tensor biased = be.alloc(DType::F32, {S, E});
  ops.moe_gate({logits.ptr<float>(), w.gate_bias.ptr<float>(), experts_dev.ptr<int32_t>(), wts_dev.ptr<float>(),
                biased.ptr<float>(), S, E, c.n_group, c.topk_group, k, c.norm_topk_prob,
                float(c.routed_scaling_factor)});
  const std::string en = fmt::format("l{}.experts", layer), wn = fmt::format("l{}.expert_weights", layer);
  const bool dump_ex = ctx.opt.dump && ctx.opt.dump->wants(en);
  if (ctx.opt.record || dump_ex) {  // our own choices, before any replay
    const std::vector<int32_t> experts = be.to_host<int32_t>(experts_dev);
    if (ctx.opt.record) ctx.opt.record->layers[layer].experts = experts;
    if (dump_ex) {
      std::vector<float> ef(experts.begin(), experts.end());
      ctx.opt.dump->add(en, {k}, ef.data(), S);
    }
  }
  if (ctx.opt.dump) dump_f32(ctx, layer, "gate_scores", biased.ptr<float>(), {E});
  if (ctx.opt.replay && !ctx.opt.replay->layers[layer].experts.empty())
    replay_experts(ctx, layer, logits, experts_dev, wts_dev);
  if (ctx.opt.dump && ctx.opt.dump->wants(wn)) {
    const std::vector<float> wts = be.to_host<float>(wts_dev);
    ctx.opt.dump->add(wn, {k}, wts.data(), S);
  }

  // Routed experts (spec §8.3), grouped by expert on the backend: R = S*k rows in expert order,
  // each the expert MLP of its token's row, then the weighted sum into the fp32 accumulator in
  // ascending expert order per token (the rounding of one scale_add per expert), then the shared
  // expert. act_quant and the GEMMs are row-wise, so every row has the bits of the per-expert loop.
  const Mlp& e0 = w.experts.at(0);
  const int64_t R = S * k, I = e0.gate.out;
  Tensor offsets = be.alloc(DType::I32, {E + 1}), rows = be.alloc(DType::I32, {R});
  Tensor row_w = be.alloc(DType::F32, {R}), pos = be.alloc(DType::I32, {S, k});
  ops.moe_route({experts_dev.ptr<int32_t>(), wts_dev.ptr<float>(), offsets.ptr<int32_t>(), rows.ptr<int32_t>(),
                 row_w.ptr<float>(), pos.ptr<int32_t>(), S, k, E});
  Tensor xq = be.alloc(DType::F8_E4M3, {S, H}), xs = be.alloc(DType::F32, {S, ops::ceil_div(H, ops::kBlock)});
  ops.act_quant({xn.ptr<bf16>(), xq.ptr<fp8>(), xs.ptr<float>(), S, H});
  auto table = [](const Tensor& t) { return t.ptr<const void*>(); };
  auto grouped = [&](const fp8* a, const float* a_s, const int32_t* src, int i, bf16* out, int64_t N, int64_t K) {
    ops.grouped_fp8_gemm({a, a_s, src, offsets.ptr<int32_t>(), reinterpret_cast<const fp8* const*>(table(w.expert_w[i])),
                          reinterpret_cast<const float* const*>(table(w.expert_s[i])), out, E, R, N, K, N});
  };
  Tensor h = be.alloc(DType::BF16, {R, I});
  {
    Tensor g = be.alloc(DType::BF16, {R, I}), u = be.alloc(DType::BF16, {R, I});
    grouped(xq.ptr<fp8>(), xs.ptr<float>(), rows.ptr<int32_t>(), 0, g.ptr<bf16>(), I, H);
    grouped(xq.ptr<fp8>(), xs.ptr<float>(), rows.ptr<int32_t>(), 1, u.ptr<bf16>(), I, H);
    ops.silu_mul({g.ptr<bf16>(), u.ptr<bf16>(), h.ptr<bf16>(), R, I});
    if (ctx.tape) {
      ctx.tape->routed.g = g;
      ctx.tape->routed.u = u;
    }
  }  // g, u back to the cache before the [R, H] output is allocated (unless taped)
  Tensor hq = be.alloc(DType::F8_E4M3, {R, I}), hs = be.alloc(DType::F32, {R, ops::ceil_div(I, ops::kBlock)});
  ops.act_quant({h.ptr<bf16>(), hq.ptr<fp8>(), hs.ptr<float>(), R, I});
  Tensor out = be.alloc(DType::BF16, {R, H});
  grouped(hq.ptr<fp8>(), hs.ptr<float>(), nullptr, 2, out.ptr<bf16>(), H, I);
  Tensor acc = be.alloc(DType::F32, {S, H});
  ops.mem.fill(acc.data, 0, size_t(S * H * 4));
  ops.moe_combine({acc.ptr<float>(), out.ptr<bf16>(), pos.ptr<int32_t>(), row_w.ptr<float>(), S, k, H});
  if (w.has_shared) {
    Tensor sh = be.alloc(DType::BF16, {S, H});
    mlp_q(be, w.shared, xq.ptr<fp8>(), xs.ptr<float>(), S, sh.ptr<bf16>(), ctx.tape ? &ctx.tape->shared : nullptr);
    ops.scale_add({acc.ptr<float>(), nullptr, sh.ptr<bf16>(), nullptr, S, H});
  }
  ops.convert({acc.data, y.data, S * H, false});
  if (LayerTape* t = ctx.tape) {
    t->logits = logits;
    t->experts = experts_dev;
    t->weights = wts_dev;
    t->offsets = offsets;
    t->rows = rows;
    t->row_w = row_w;
    t->pos = pos;
    t->routed.x8 = xq;
    t->routed.xs = xs;
    t->routed.h = h;
    t->routed_out = out;
    t->shared.x8 = xq;
    t->shared.xs = xs;
  }
  return y;
}

}  // namespace dsa
