// Feed-forward (spec §8): dense SwiGLU MLP, and the MoE (sigmoid gate with correction bias and
// group-limited routing, routed experts combined in fp32, shared expert added). Routing decisions
// come back to the host (S × top-k ids) to group tokens by expert; all math stays on the backend.
#include <cmath>
#include <fmt/format.h>

#include "model/layer.h"

namespace dsa {

namespace {

// y = down(bf16(silu(gate x) * up x)), rows of x: [M, H] → y [M, H].
void mlp(Backend& be, const Mlp& m, const bf16* x, int64_t M, bf16* y) {
  const int64_t I = m.gate.out, H = m.down.out;
  Tensor g = be.alloc(DType::BF16, {M, I}), u = be.alloc(DType::BF16, {M, I}), h = be.alloc(DType::BF16, {M, I});
  fp8_linear(be, x, M, m.gate, g.ptr<bf16>(), I);
  fp8_linear(be, x, M, m.up, u.ptr<bf16>(), I);
  be.ops().silu_mul({g.ptr<bf16>(), u.ptr<bf16>(), h.ptr<bf16>(), M, I});
  fp8_linear(be, h.ptr<bf16>(), M, m.down, y, H);
}

}  // namespace

Tensor run_ffn(const LayerContext& ctx, const LayerWeights& w, int64_t layer, const Tensor& xn) {
  const ModelConfig& c = ctx.cfg;
  Backend& be = ctx.be;
  const ops::OpTable& ops = be.ops();
  const int64_t S = ctx.S, H = c.hidden_size;
  Tensor y = be.alloc(DType::BF16, {S, H});
  if (!w.moe) {
    mlp(be, w.dense, xn.ptr<bf16>(), S, y.ptr<bf16>());
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
  std::vector<int32_t> experts = be.to_host<int32_t>(experts_dev);
  std::vector<float> wts = be.to_host<float>(wts_dev);
  if (ctx.opt.record) ctx.opt.record->layers[layer].experts = experts;
  if (ctx.opt.dump) {
    const std::string en = fmt::format("l{}.experts", layer);
    if (ctx.opt.dump->wants(en)) {
      std::vector<float> ef(experts.begin(), experts.end());
      ctx.opt.dump->add(en, {k}, ef.data(), S);
    }
    dump_f32(ctx, layer, "gate_scores", biased.ptr<float>(), {E});
  }
  if (ctx.opt.replay) {
    // Replayed choices; weights recomputed from our own unbiased sigmoid scores (spec §8.2 step 5).
    const auto& r = ctx.opt.replay->layers[layer].experts;
    DSA_CHECK(int64_t(r.size()) == S * k, "replay: layer {} experts has {} entries, expected {}", layer, r.size(), S * k);
    const std::vector<float> lg = be.to_host<float>(logits);
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
    experts = r;
  }
  if (ctx.opt.dump) {
    const std::string full = fmt::format("l{}.expert_weights", layer);
    if (ctx.opt.dump->wants(full)) ctx.opt.dump->add(full, {k}, wts.data(), S);
  }
  // Token lists per expert (host), then gather → expert MLP → weighted add into the fp32
  // accumulator, experts in ascending index, then the shared expert (spec §8.3).
  std::vector<std::vector<int32_t>> rows(static_cast<size_t>(E));
  std::vector<std::vector<float>> rw(static_cast<size_t>(E));
  for (int64_t s = 0; s < S; ++s)
    for (int64_t j = 0; j < k; ++j) {
      rows[experts[s * k + j]].push_back(int32_t(s));
      rw[experts[s * k + j]].push_back(wts[s * k + j]);
    }
  Tensor acc = be.alloc(DType::F32, {S, H});
  ops.mem.fill(acc.data, 0, size_t(S * H * 4));
  for (int64_t e = 0; e < E; ++e) {
    if (rows[e].empty()) continue;
    const int64_t M = int64_t(rows[e].size());
    std::vector<int64_t> src(static_cast<size_t>(M));
    for (int64_t i = 0; i < M; ++i) src[i] = int64_t(rows[e][i]) * H * 2;
    const Tensor so = be.upload(src, DType::I64), r_dev = be.upload(rows[e], DType::I32),
                 w_dev = be.upload(rw[e], DType::F32);
    Tensor xin = be.alloc(DType::BF16, {M, H}), out = be.alloc(DType::BF16, {M, H});
    ops.copy_rows({xn.ptr<uint8_t>(), xin.ptr<uint8_t>(), so.ptr<int64_t>(), nullptr, 0, H * 2, H * 2, M});
    mlp(be, w.experts[e], xin.ptr<bf16>(), M, out.ptr<bf16>());
    ops.scale_add({acc.ptr<float>(), r_dev.ptr<int32_t>(), out.ptr<bf16>(), w_dev.ptr<float>(), M, H});
  }
  if (w.has_shared) {
    Tensor sh = be.alloc(DType::BF16, {S, H});
    mlp(be, w.shared, xn.ptr<bf16>(), S, sh.ptr<bf16>());
    ops.scale_add({acc.ptr<float>(), nullptr, sh.ptr<bf16>(), nullptr, S, H});
  }
  ops.convert({acc.data, y.data, S * H, false});
  return y;
}

}  // namespace dsa
