// Indexer KL loss and its backward through the indexer (docs/dsa_conversion.md §1): the target
// from the attention's own probabilities (phase 1 of the sparse MLA backward, with a zero output
// gradient, recomputes exactly the p the forward used), the KL and its logit gradient
// (indexer_kl), then indexer_logits' backward and the chains of q (Hadamard, half-split RoPE,
// wq_b), k (Hadamard, RoPE, LayerNorm, wk) and the head weights (weights_proj), every FP8 step
// straight through as in the rest of the trainer.
#include "model/indexer_loss.h"

#include <algorithm>
#include <cmath>
#include <functional>

namespace dsa {

namespace {

// Σ over rows of the mass of the ksel largest p_t[j] (p_t as in indexer_kl: P summed over heads,
// L1-normalised over the row's valid slots) — the recall of the best possible top-ksel set.
double oracle_recall_sum(Backend& be, const Tensor& P, const Tensor& idx, int64_t S, int64_t nh, int64_t K,
                         int64_t ksel) {
  const std::vector<float> p = be.to_host<float>(P);
  const std::vector<int32_t> ix = be.to_host<int32_t>(idx);
  std::vector<double> row(static_cast<size_t>(K));
  double sum = 0;
  for (int64_t t = 0; t < S; ++t) {
    size_t n = 0;
    double tot = 0;
    for (int64_t j = 0; j < K; ++j) {
      if (ix[size_t(t * K + j)] < 0) continue;
      double v = 0;
      for (int64_t h = 0; h < nh; ++h) v += p[size_t((t * nh + h) * K + j)];
      row[n++] = v;
      tot += v;
    }
    if (tot <= 0) continue;
    const size_t k = std::min(n, size_t(std::max<int64_t>(ksel, 0)));
    std::nth_element(row.begin(), row.begin() + k, row.begin() + n, std::greater<double>());
    double top = 0;
    for (size_t j = 0; j < k; ++j) top += row[j];
    sum += top / tot;
  }
  return sum;
}

}  // namespace

IndexerKlStats indexer_kl(const GradContext& c, const LayerWeights& w, int64_t layer, const LayerTape& t,
                          const Tensor& key_base, float coef, bool recall) {
  const ModelConfig& cfg = c.cfg;
  Backend& be = c.be;
  const ops::GradTable& g = c.g();
  DSA_CHECK(g.indexer_kl && g.indexer_logits_bwd, "the {} backend has no indexer training ops (indexer_kl)",
            be.ops().name);
  const IndexerTape& it = t.indexer;
  DSA_CHECK(it.scores.data && t.q_abs.data, "internal: layer {} has no indexer tape (score_indexer)", layer);
  const int64_t S = c.S, nh = cfg.num_attention_heads, L = cfg.kv_lora_rank, R = cfg.qk_rope_head_dim, K = t.K;
  const int64_t ih = cfg.index_n_heads, D = cfg.index_head_dim, H = cfg.hidden_size, N = it.scores.dim(1);
  KvCache& kv = *c.rows.kv;

  // The attention's probabilities P [S, nh, K] (bf16-rounded, as its forward used them).
  Tensor d_o = zeros_f32(be, {S, nh, L});
  Tensor d_qa = be.alloc(DType::F32, {S, nh, L}), d_qp = be.alloc(DType::F32, {S, nh, R});
  Tensor P = be.alloc(DType::F32, {S, nh, K}), G = be.alloc(DType::F32, {S, nh, K});
  g.sparse_mla_bwd_q({t.q_abs.ptr<bf16>(), t.q_pe.ptr<bf16>(), kv.latent(layer), t.phys.ptr<int32_t>(),
                      d_o.ptr<float>(), d_qa.ptr<float>(), d_qp.ptr<float>(), P.ptr<float>(), G.ptr<float>(), S, nh,
                      kv.capacity() * kv.page_size(), K, kv.latent_layout(), float(cfg.softmax_scale())});
  d_o = d_qa = d_qp = G = Tensor{};

  const bool grad = coef != 0.0f;
  Tensor loss = be.alloc(DType::I64, {S}), rec;  // doubles
  if (recall) rec = be.alloc(DType::I64, {S});
  Tensor dI;
  if (grad) dI = be.alloc(DType::F32, {S, N});
  const int64_t ksel = it.topk.data ? it.topk.dim(1) : 0;
  g.indexer_kl({P.ptr<float>(), t.idx.ptr<int32_t>(), it.scores.ptr<float>(), recall ? it.topk.ptr<int32_t>() : nullptr,
                reinterpret_cast<double*>(loss.data), recall ? reinterpret_cast<double*>(rec.data) : nullptr,
                grad ? dI.ptr<float>() : nullptr, S, nh, K, N, recall ? ksel : 0, coef});
  IndexerKlStats st;
  st.rows = S;
  std::vector<double> host(static_cast<size_t>(S));
  be.download(loss, host.data());
  for (double v : host) st.loss_sum += v;
  if (recall) {
    be.download(rec, host.data());
    for (double v : host) st.recall_sum += v;
    st.oracle_sum = oracle_recall_sum(be, P, t.idx, S, nh, K, ksel);
  }
  if (!grad) return st;
  P = Tensor{};

  // indexer_logits backward: head weights, rotated queries and keys.
  Tensor dw = be.alloc(DType::F32, {S, ih}), dq = be.alloc(DType::F32, {S, ih, D});
  Tensor dk = zeros_f32(be, {S, D});
  g.indexer_logits_bwd({it.q8.ptr<fp8>(), it.qs.ptr<float>(), it.k8.ptr<fp8>(), it.ks.ptr<float>(), it.w.ptr<float>(),
                        key_base.ptr<int32_t>(), c.rows.ends_dev.ptr<int32_t>(), dI.ptr<float>(), dw.ptr<float>(),
                        dq.ptr<float>(), dk.ptr<float>(), S, ih, D, S, N});
  dI = Tensor{};
  const int32_t* pos = c.rows.pos_dev.ptr<int32_t>();
  const std::string pre = "self_attn.indexer.";
  // q = hadamard(rope_half(wq_b(qr))): the Hadamard is its own transpose, RoPE's is rope_bwd.
  g.hadamard_f32({dq.ptr<float>(), S * ih, D});
  g.rope_bwd({dq.ptr<float>(), pos, c.rope_cos, c.rope_sin, S, ih, D, 0, R, false});
  fp8_linear_bwd(c, t.qr.ptr<bf16>(), S, w.idx_wq_b, dq.ptr<float>(), nullptr, false, c.grad(layer, pre + "wq_b.weight"));
  // k = hadamard(rope_half(LayerNorm(wk(xn)))).
  g.hadamard_f32({dk.ptr<float>(), S, D});
  g.rope_bwd({dk.ptr<float>(), pos, c.rope_cos, c.rope_sin, S, 1, D, 0, R, false});
  g.layer_norm_bwd({it.k0.ptr<bf16>(), w.idx_k_norm_w.ptr<float>(), dk.ptr<float>(), dk.ptr<float>(),
                    c.grad(layer, pre + "k_norm.weight"), c.grad(layer, pre + "k_norm.bias"), S, D, 1e-6f});
  fp8_linear_bwd(c, t.xn.ptr<bf16>(), S, w.idx_wk, dk.ptr<float>(), nullptr, false, c.grad(layer, pre + "wk.weight"));
  // w = weights_proj(fp32 xn): dW[ih, H] += dw^T · x.
  Tensor x32 = be.alloc(DType::F32, {S, H});
  be.ops().convert({t.xn.data, x32.data, S * H, true});
  matmul(be, {dw.data, ops::GemmType::F32, true, ih, x32.data, ops::GemmType::F32, false, H,
              c.grad(layer, pre + "weights_proj.weight"), H, ih, H, S, true});
  return st;
}

}  // namespace dsa
