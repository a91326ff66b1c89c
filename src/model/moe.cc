// Feed-forward (spec §8): dense SwiGLU MLP, and the MoE (sigmoid gate with correction bias and
// group-limited routing, routed experts combined in fp32, shared expert added).
#include <cmath>
#include <fmt/format.h>

#include "model/layer.h"

namespace dsa {

namespace {

// y = down(bf16(silu(gate x) * up x)), rows of x: [M, H] → y [M, H].
void mlp(const ops::OpTable& ops, const Mlp& m, const bf16* x, int64_t M, bf16* y) {
  const int64_t I = m.gate.out, H = m.down.out;
  std::vector<bf16> g(static_cast<size_t>(M * I)), u(size_t(M * I)), hbuf(size_t(M * I));
  fp8_linear(ops, x, M, m.gate, g.data(), I);
  fp8_linear(ops, x, M, m.up, u.data(), I);
  ops.silu_mul({g.data(), u.data(), hbuf.data(), M, I});
  fp8_linear(ops, hbuf.data(), M, m.down, y, H);
}

}  // namespace

Tensor run_ffn(const LayerContext& ctx, const LayerWeights& w, int64_t layer, const Tensor& xn) {
  const ModelConfig& c = ctx.cfg;
  const ops::OpTable& ops = ctx.ops;
  const int64_t S = ctx.S, H = c.hidden_size;
  Tensor y = Tensor::empty(DType::BF16, {S, H});
  if (!w.moe) {
    mlp(ops, w.dense, xn.ptr<bf16>(), S, y.ptr<bf16>());
    return y;
  }
  const int64_t E = c.n_routed_experts, k = c.num_experts_per_tok;
  std::vector<float> x32(static_cast<size_t>(S * H)), logits(size_t(S * E)), biased(size_t(S * E)), wts(size_t(S * k));
  for (int64_t i = 0; i < S * H; ++i) x32[i] = bf16_to_f32(xn.ptr<bf16>()[i]);
  ops.linear_f32({x32.data(), w.gate_w.ptr<bf16>(), logits.data(), S, E, H});
  std::vector<int32_t> experts(static_cast<size_t>(S * k));
  ops.moe_gate({logits.data(), w.gate_bias.ptr<float>(), experts.data(), wts.data(), biased.data(), S, E, c.n_group,
                c.topk_group, k, c.norm_topk_prob, float(c.routed_scaling_factor)});
  if (ctx.opt.record) ctx.opt.record->layers[layer].experts = experts;
  if (ctx.opt.dump) {
    auto add = [&](const char* n, const Shape& row, const float* d) {
      const std::string full = fmt::format("l{}.{}", layer, n);
      if (ctx.opt.dump->wants(full)) ctx.opt.dump->add(full, row, d, S);
    };
    std::vector<float> ef(experts.begin(), experts.end());
    add("experts", {k}, ef.data());
    add("gate_scores", {E}, biased.data());
  }
  if (ctx.opt.replay) {
    // Replayed choices; weights recomputed from our own unbiased sigmoid scores (spec §8.2 step 5).
    const auto& r = ctx.opt.replay->layers[layer].experts;
    DSA_CHECK(int64_t(r.size()) == S * k, "replay: layer {} experts has {} entries, expected {}", layer, r.size(), S * k);
    for (int64_t s = 0; s < S; ++s) {
      float sum = 0;
      for (int64_t j = 0; j < k; ++j) {
        const int32_t e = r[s * k + j];
        DSA_CHECK(e >= 0 && e < E, "replay: layer {} expert id {} out of range", layer, e);
        const float sc = 1.0f / (1.0f + std::exp(-logits[s * E + e]));
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
  // Combine in fp32: experts in ascending index, then the shared expert (spec §8.3).
  std::vector<float> acc(size_t(S * H), 0.0f);
  std::vector<int32_t> rows;
  std::vector<float> rw;
  for (int64_t e = 0; e < E; ++e) {
    rows.clear();
    rw.clear();
    for (int64_t s = 0; s < S; ++s)
      for (int64_t j = 0; j < k; ++j)
        if (experts[s * k + j] == e) {
          rows.push_back(int32_t(s));
          rw.push_back(wts[s * k + j]);
        }
    if (rows.empty()) continue;
    const int64_t M = int64_t(rows.size());
    std::vector<bf16> xin(static_cast<size_t>(M * H)), out(size_t(M * H));
    for (int64_t i = 0; i < M; ++i)
      std::copy(xn.ptr<bf16>() + rows[i] * H, xn.ptr<bf16>() + (rows[i] + 1) * H, xin.begin() + i * H);
    mlp(ops, w.experts[e], xin.data(), M, out.data());
    for (int64_t i = 0; i < M; ++i)
      for (int64_t d = 0; d < H; ++d) acc[rows[i] * H + d] += bf16_to_f32(out[i * H + d]) * rw[i];
  }
  if (w.has_shared) {
    std::vector<bf16> sh(static_cast<size_t>(S * H));
    mlp(ops, w.shared, xn.ptr<bf16>(), S, sh.data());
    for (int64_t i = 0; i < S * H; ++i) acc[i] += bf16_to_f32(sh[i]);
  }
  for (int64_t i = 0; i < S * H; ++i) y.ptr<bf16>()[i] = f32_to_bf16(acc[i]);
  return y;
}

}  // namespace dsa
