// TrainStep: the batch through the engine's forward (all rows of all sequences in one call,
// absorbed attention, a tape per block), the MTP block, the chunked LM-head cross-entropy, the
// balance loss, then the backward in reverse (docs/training.md).
#include "model/train_step.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "model/backward.h"
#include "model/indexer_loss.h"

namespace dsa {

namespace {

// Decisions of B sequences (rows_per_seq each) for layers [l0, l1) ↔ one call's rows. A layer a
// sequence has no decisions for (e.g. the MTP layer in an engine record) stays its own.
void join_decisions(const std::vector<Decisions>& per_seq, int64_t l0, int64_t l1, int64_t nlayers, Decisions& out) {
  out.layers.assign(size_t(nlayers), {});
  for (int64_t l = l0; l < l1; ++l)
    for (const Decisions& d : per_seq) {
      if (int64_t(d.layers.size()) <= l) continue;
      auto& o = out.layers[size_t(l)];
      o.topk.insert(o.topk.end(), d.layers[l].topk.begin(), d.layers[l].topk.end());
      o.experts.insert(o.experts.end(), d.layers[l].experts.begin(), d.layers[l].experts.end());
    }
}

void split_decisions(const Decisions& call, int64_t l0, int64_t l1, int64_t B, std::vector<Decisions>& per_seq) {
  for (int64_t l = l0; l < l1; ++l) {
    const auto& c = call.layers.at(size_t(l));
    for (int64_t b = 0; b < B; ++b) {
      auto& o = per_seq[size_t(b)].layers[size_t(l)];
      const size_t nt = c.topk.size() / size_t(B), ne = c.experts.size() / size_t(B);
      o.topk.assign(c.topk.begin() + b * nt, c.topk.begin() + (b + 1) * nt);
      o.experts.assign(c.experts.begin() + b * ne, c.experts.begin() + (b + 1) * ne);
    }
  }
}

// Rows [first, first + n) of a bf16 tensor into a new one, by row index list.
Tensor gather_rows(Backend& be, const Tensor& src, const std::vector<int64_t>& rows, int64_t row_bytes, DType dt,
                   int64_t row_elems) {
  std::vector<int64_t> off(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) off[i] = rows[i] * row_bytes;
  const Tensor od = be.upload(off, DType::I64);
  Tensor out = be.alloc(dt, {int64_t(rows.size()), row_elems});
  be.ops().copy_rows({src.ptr<uint8_t>(), out.ptr<uint8_t>(), od.ptr<int64_t>(), nullptr, 0, row_bytes, row_bytes,
                      int64_t(rows.size())});
  return out;
}

}  // namespace

TrainStep::TrainStep(Model& model, Params& params) : m_(model), p_(params) {
  DSA_CHECK(model.be_->ops().grad, "the {} backend has no training ops", model.be_->ops().name);
}

TrainResult TrainStep::run(const TrainBatch& batch, const TrainOptions& opt, float grad_scale) {
  return step(batch, opt, grad_scale, true);
}

TrainResult TrainStep::evaluate(const TrainBatch& batch, const TrainOptions& opt) { return step(batch, opt, 1.0f, false); }

// Kept sets of the rows (TrainOptions::kept_offsets / kept_ids), or none.
struct KeptSets {
  const std::vector<int64_t>* off = nullptr;
  const std::vector<int32_t>* ids = nullptr;
};

// The LM head over rows of hn with the chunked log-softmax: logp of each target (renormalised
// over its kept set when there is one); with g (dL/dlogp per row, host), the gradients of hn
// (d_hn, written) and of the head weight (accumulated).
static void head_loss(Model& m, Backend& be, const Tensor& lm_head, const Tensor& hn, const std::vector<int32_t>& targets,
                      const std::vector<float>* g, std::vector<double>& logp, float* d_hn, float* d_head,
                      KeptSets kept = {}) {
  const ops::OpTable& ops = be.ops();
  const int64_t M = int64_t(targets.size()), H = hn.dim(1), V = lm_head.dim(0);
  const int64_t chunk = std::clamp<int64_t>((int64_t(16) << 20) / V, 1, std::max<int64_t>(M, 1));
  logp.assign(size_t(M), 0.0);
  for (int64_t r0 = 0; r0 < M; r0 += chunk) {
    const int64_t n = std::min(chunk, M - r0);
    Tensor x32 = be.alloc(DType::F32, {n, H}), z = be.alloc(DType::F32, {n, V});
    ops.convert({hn.ptr<bf16>() + r0 * H, x32.data, n * H, true});
    ops.linear_f32({x32.ptr<float>(), lm_head.ptr<bf16>(), z.ptr<float>(), n, V, H});
    const Tensor tg = be.upload(targets.data() + r0, DType::I32, {n});
    if (kept.off) {
      const std::vector<int64_t>& off = *kept.off;
      const int64_t b = off[size_t(r0)], e = off[size_t(r0 + n)];
      if (e > b) {
        std::vector<int64_t> o(off.begin() + r0, off.begin() + r0 + n + 1);
        for (int64_t& x : o) x -= b;
        const Tensor to = be.upload(o.data(), DType::I64, {n + 1});
        const Tensor ti = be.upload(kept.ids->data() + b, DType::I32, {e - b});
        ops.grad->mask_logits({z.ptr<float>(), reinterpret_cast<const int64_t*>(to.data), ti.ptr<int32_t>(), n, V});
      }
    }
    Tensor lp = be.alloc(DType::I64, {n});  // doubles
    Tensor gd;
    if (g) gd = be.upload(g->data() + r0, DType::F32, {n});
    ops.grad->logits_grad({z.ptr<float>(), tg.ptr<int32_t>(), reinterpret_cast<double*>(lp.data),
                           g ? gd.ptr<float>() : nullptr, g ? z.ptr<float>() : nullptr, n, V});
    be.download(lp, logp.data() + r0);
    if (!g) continue;
    matmul(be, {z.data, ops::GemmType::F32, false, V, lm_head.data, ops::GemmType::BF16, false, H, d_hn + r0 * H, H, n,
                H, V, false});
    matmul(be, {z.data, ops::GemmType::F32, true, V, x32.data, ops::GemmType::F32, false, H, d_head, H, V, H, n, true});
  }
  (void)m;
}

// Sequence-wise balance loss of one MoE layer (docs/training.md §4) over B sequences of `rows`
// rows each; returns the loss and fills d_scores [B*rows, E] (scaled by coef) when asked.
static double balance_loss(const ModelConfig& c, const std::vector<float>& logits, const std::vector<int32_t>& experts,
                           int64_t B, int64_t rows, double alpha, double coef, std::vector<float>* d_scores,
                           std::vector<int64_t>& load) {
  const int64_t E = c.n_routed_experts, k = c.num_experts_per_tok;
  double loss = 0.0;
  if (d_scores) d_scores->assign(size_t(B * rows * E), 0.0f);
  std::vector<double> f(static_cast<size_t>(E)), P(static_cast<size_t>(E)), sc(static_cast<size_t>(E));
  for (int64_t b = 0; b < B; ++b) {
    std::fill(f.begin(), f.end(), 0.0);
    std::fill(P.begin(), P.end(), 0.0);
    for (int64_t t = 0; t < rows; ++t) {
      const int64_t r = b * rows + t;
      for (int64_t j = 0; j < k; ++j) {
        f[size_t(experts[r * k + j])] += double(E) / double(k * rows);
        ++load[size_t(experts[r * k + j])];
      }
      double z = 0;
      for (int64_t e = 0; e < E; ++e) z += sc[size_t(e)] = 1.0f / (1.0f + std::exp(-logits[r * E + e]));
      for (int64_t e = 0; e < E; ++e) P[size_t(e)] += sc[size_t(e)] / z / double(rows);
    }
    for (int64_t e = 0; e < E; ++e) loss += alpha * f[size_t(e)] * P[size_t(e)] / double(B);
    if (!d_scores) continue;
    for (int64_t t = 0; t < rows; ++t) {
      const int64_t r = b * rows + t;
      double z = 0, dot = 0;
      for (int64_t e = 0; e < E; ++e) z += sc[size_t(e)] = 1.0f / (1.0f + std::exp(-logits[r * E + e]));
      // a_e = dL/ds'_e = alpha f_e / (rows B); ds_e = (a_e - Σ a s') / z.
      for (int64_t e = 0; e < E; ++e) dot += alpha * f[size_t(e)] / double(rows * B) * sc[size_t(e)] / z;
      for (int64_t e = 0; e < E; ++e)
        (*d_scores)[size_t(r * E + e)] = float(coef * (alpha * f[size_t(e)] / double(rows * B) - dot) / z);
    }
  }
  return loss;
}

TrainResult TrainStep::step(const TrainBatch& batch, const TrainOptions& opt, float grad_scale, bool backward) {
  const ModelConfig& cfg = m_.cfg_;
  Backend& be = *m_.be_;
  const ops::OpTable& ops = be.ops();
  const ModelWeights& W = m_.w_;
  const int64_t B = batch.B, T = batch.T, H = cfg.hidden_size, n = cfg.num_hidden_layers, E = cfg.n_routed_experts;
  const float eps = float(cfg.rms_norm_eps);
  DSA_CHECK(B > 0 && T > 0, "train: empty batch ({} x {})", B, T);
  DSA_CHECK(int64_t(batch.tokens.size()) == B * (T + 1), "train: {} tokens for a {} x ({}+1) batch",
            batch.tokens.size(), B, T);
  DSA_CHECK(batch.weights.empty() || int64_t(batch.weights.size()) == B * T, "train: {} loss weights for {} targets",
            batch.weights.size(), B * T);
  const bool mtp = opt.mtp_weight > 0;
  if (mtp) {
    DSA_CHECK(!W.mtp.empty() && p_.has_mtp(), "train: the MTP loss needs a model with an MTP layer");
    DSA_CHECK(T >= 2, "train: the MTP loss needs T >= 2");
  }
  DSA_CHECK(!W.layers.empty() || n == 0, "train: the model has no weights (set_weights)");
  auto tok = [&](int64_t b, int64_t t) { return batch.tokens[size_t(b * (T + 1) + t)]; };
  auto wt = [&](int64_t b, int64_t t) { return batch.weights.empty() ? 1.0f : batch.weights[size_t(b * T + t)]; };
  if (opt.replay) DSA_CHECK(int64_t(opt.replay->size()) == B, "replay: {} sequences for a batch of {}", opt.replay->size(), B);
  const int64_t nl = n + (mtp ? 1 : 0);

  // Fresh sequences in a cache with a layer for the MTP block.
  ModelConfig kc = cfg;
  kc.num_hidden_layers = nl;
  auto kv = std::make_shared<KvCache>(kc, 64, 0, ops.mem);
  std::vector<SequenceState> seqs;
  for (int64_t b = 0; b < B; ++b) seqs.emplace_back(kv);

  // ---- main forward: B*T rows in one call.
  Model::Rows rows;
  std::vector<int32_t> inputs;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      rows.seqs.push_back(&seqs[size_t(b)]);
      rows.pos.push_back(int32_t(t));
      inputs.push_back(tok(b, t));
    }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 1; t <= T; ++t) {
      const int32_t y = tok(b, t);
      DSA_CHECK(y >= 0 && y < cfg.vocab_size, "token id {} is outside the vocabulary [0, {})", y, cfg.vocab_size);
    }
  const int64_t S = B * T;
  ForwardOptions fo;
  fo.dense = opt.dense;
  fo.absorbed_prefill = true;
  // Indexer KL / recall: the indexer scored and taped; rows of a sequence are contiguous from
  // position 0, so the key row of position s of row r's sequence is r - pos[r] + s.
  fo.score_indexer = opt.indexer_kl > 0 || opt.indexer_recall;
  const bool kl_on = fo.score_indexer, recall = opt.indexer_recall && opt.dense;
  const bool lm_bwd = backward && opt.lm_backward;
  const float kl_coef = backward && opt.indexer_kl > 0 ? float(opt.indexer_kl * grad_scale) : 0.0f;
  auto key_base_of = [&](const Model::Rows& rr) {
    std::vector<int32_t> kb(rr.pos.size());
    for (size_t r = 0; r < kb.size(); ++r) kb[r] = int32_t(int64_t(r) - rr.pos[r]);
    return be.upload(kb, DType::I32);
  };
  Tensor kb_main;
  if (kl_on) kb_main = key_base_of(rows);
  TrainResult res;
  if (kl_on) {
    res.layer_kl.assign(size_t(nl), 0.0);
    if (recall) res.layer_recall.assign(size_t(nl), 0.0), res.layer_oracle_recall.assign(size_t(nl), 0.0);
  }
  // coef / rows: the gradient of indexer_kl · mean_t KL_t.
  auto layer_kl = [&](const GradContext& c, const LayerWeights& lw, int64_t layer, const LayerTape& t, const Tensor& kb) {
    const IndexerKlStats st = indexer_kl(c, lw, layer, t, kb, kl_coef / float(std::max<int64_t>(c.S, 1)), recall);
    res.layer_kl[size_t(layer)] = st.rows ? st.loss_sum / double(st.rows) : 0.0;
    if (recall) {
      res.layer_recall[size_t(layer)] = st.rows ? st.recall_sum / double(st.rows) : 0.0;
      res.layer_oracle_recall[size_t(layer)] = st.rows ? st.oracle_sum / double(st.rows) : 0.0;
    }
  };
  Decisions replay_main, rec_main;
  if (opt.replay) {
    join_decisions(*opt.replay, 0, n, nl, replay_main);
    fo.replay = &replay_main;
  }
  if (opt.record) {
    rec_main.layers.assign(size_t(nl), {});
    fo.record = &rec_main;
  }
  Tensor h = m_.embed_rows(inputs);
  m_.prepare(rows, fo, true);  // (may grow the RoPE tables: their pointers are read after it)
  GradContext gc{cfg, be, p_, rows, S, m_.rope_cos_dev_.ptr<float>(), m_.rope_sin_dev_.ptr<float>()};
  std::vector<LayerTape> tapes(static_cast<size_t>(n));
  const bool recompute = backward && opt.recompute;
  std::vector<Tensor> h_in(static_cast<size_t>(n)), res_in(static_cast<size_t>(n));  // recompute: block inputs
  Tensor residual;
  for (int64_t i = 0; i < n; ++i) {
    LayerContext ctx{cfg, be, rows, S, m_.rope_cos_dev_.ptr<float>(), m_.rope_sin_dev_.ptr<float>(), fo,
                     backward && !recompute ? &tapes[size_t(i)] : nullptr};
    // Routing statistics (balance loss, loads) come from the tape; under recompute from the
    // backward's rebuilt one.
    const bool keep_tape = !backward && cfg.is_moe_layer(i) && opt.balance_alpha > 0;
    if (keep_tape || (!backward && kl_on)) ctx.tape = &tapes[size_t(i)];
    if (recompute) {
      h_in[size_t(i)] = clone(be, h);
      if (residual.data) res_in[size_t(i)] = clone(be, residual);
    }
    run_layer(ctx, W.layers[size_t(i)], i, h, residual);
    if (kl_on && ctx.tape) {
      layer_kl(gc, W.layers[size_t(i)], i, tapes[size_t(i)], kb_main);
      tapes[size_t(i)].indexer = IndexerTape{};
      if (!backward && !keep_tape) tapes[size_t(i)] = LayerTape{};
    }
  }
  const Tensor h_last = h, res_last = clone(be, residual);
  Tensor hn = be.alloc(DType::BF16, {S, H});
  ops.rms_norm({h.ptr<bf16>(), residual.ptr<bf16>(), W.final_norm.ptr<float>(), hn.ptr<bf16>(), S, H, eps});

  // ---- MTP block: row (b, t) for t < T-1 combines hn[b, t] with embed(x[b, t+1]).
  const int64_t Sm = mtp ? B * (T - 1) : 0;
  Model::Rows mrows;
  LayerTape mtape;
  Tensor m_e, m_en_in, m_hng, m_cat, hm_last, resm_last, hnm;
  std::vector<int32_t> mtp_inputs;
  Decisions replay_mtp, rec_mtp;
  if (mtp) {
    const MtpWeights& mw = W.mtp[0];
    std::vector<int64_t> hn_rows;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t + 1 < T; ++t) {
        mrows.seqs.push_back(&seqs[size_t(b)]);
        mrows.pos.push_back(int32_t(t));
        mtp_inputs.push_back(tok(b, t + 1));
        hn_rows.push_back(b * T + t);
      }
    ForwardOptions fm = fo;
    if (opt.replay) {
      join_decisions(*opt.replay, n, n + 1, nl, replay_mtp);
      fm.replay = &replay_mtp;
    }
    if (opt.record) {
      rec_mtp.layers.assign(size_t(nl), {});
      fm.record = &rec_mtp;
    }
    m_.prepare(mrows, fm, false);
    m_e = m_.embed_rows(mtp_inputs);
    Tensor en = be.alloc(DType::BF16, {Sm, H});
    ops.rms_norm({m_e.ptr<bf16>(), nullptr, mw.enorm.ptr<float>(), en.ptr<bf16>(), Sm, H, eps});
    m_hng = gather_rows(be, hn, hn_rows, H * 2, DType::BF16, H);
    Tensor gn = be.alloc(DType::BF16, {Sm, H});
    ops.rms_norm({m_hng.ptr<bf16>(), nullptr, mw.hnorm.ptr<float>(), gn.ptr<bf16>(), Sm, H, eps});
    m_cat = be.alloc(DType::BF16, {Sm, 2 * H});
    copy_slice(be, en.data, H * 2, m_cat.data, 4 * H, H * 2, Sm);
    copy_slice(be, gn.data, H * 2, m_cat.ptr<bf16>() + H, 4 * H, H * 2, Sm);
    Tensor cat32 = be.alloc(DType::F32, {Sm, 2 * H}), hp32 = be.alloc(DType::F32, {Sm, H});
    ops.convert({m_cat.data, cat32.data, Sm * 2 * H, true});
    ops.linear_f32({cat32.ptr<float>(), mw.eh_proj.ptr<bf16>(), hp32.ptr<float>(), Sm, H, 2 * H});
    Tensor hm = be.alloc(DType::BF16, {Sm, H}), res_m;
    ops.convert({hp32.data, hm.data, Sm * H, false});
    LayerContext ctx{cfg, be, mrows, Sm, m_.rope_cos_dev_.ptr<float>(), m_.rope_sin_dev_.ptr<float>(), fm, &mtape};
    run_layer(ctx, mw.layer, n, hm, res_m);
    hm_last = hm;
    resm_last = clone(be, res_m);
    if (kl_on) {
      GradContext gm{cfg, be, p_, mrows, Sm, m_.rope_cos_dev_.ptr<float>(), m_.rope_sin_dev_.ptr<float>()};
      layer_kl(gm, mw.layer, n, mtape, key_base_of(mrows));
      mtape.indexer = IndexerTape{};
    }
    hnm = be.alloc(DType::BF16, {Sm, H});
    ops.rms_norm({hm.ptr<bf16>(), res_m.ptr<bf16>(), mw.head_norm.ptr<float>(), hnm.ptr<bf16>(), Sm, H, eps});
  }
  if (opt.record) {
    opt.record->assign(size_t(B), Decisions{});
    for (auto& d : *opt.record) d.layers.assign(size_t(nl), {});
    split_decisions(rec_main, 0, n, B, *opt.record);
    if (mtp) split_decisions(rec_mtp, n, n + 1, B, *opt.record);
  }

  // ---- losses
  std::vector<int32_t> targets;
  std::vector<float> g_main;
  double wsum = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      targets.push_back(tok(b, t + 1));
      wsum += wt(b, t);
    }
  res.weight_sum = wsum;
  KeptSets kept;
  if (opt.kept_offsets) {
    const std::vector<int64_t>& off = *opt.kept_offsets;
    DSA_CHECK(opt.kept_ids && int64_t(off.size()) == S + 1 && off[0] == 0 && off.back() == int64_t(opt.kept_ids->size()),
              "train: kept sets need {} + 1 offsets from 0 to the number of ids", S);
    DSA_CHECK(ops.grad->mask_logits, "train: the {} backend has no mask_logits (keep-sampling-mask)", ops.name);
    const std::vector<int32_t>& ids = *opt.kept_ids;
    for (int64_t r = 0; r < S; ++r) {
      const int64_t b = off[size_t(r)], e = off[size_t(r + 1)];
      DSA_CHECK(b <= e, "train: kept set of target {}: offsets decrease", r);
      for (int64_t j = b; j < e; ++j)
        DSA_CHECK(ids[size_t(j)] >= 0 && ids[size_t(j)] < cfg.vocab_size && (j == b || ids[size_t(j - 1)] < ids[size_t(j)]),
                  "train: kept set of target {}: ids must be ascending, distinct and inside the vocabulary", r);
      DSA_CHECK(b == e || std::binary_search(ids.begin() + b, ids.begin() + e, targets[size_t(r)]),
                "train: target {} (id {}) is outside its kept set", r, targets[size_t(r)]);
    }
    kept = {opt.kept_offsets, opt.kept_ids};
  }
  Tensor d_hn, d_hnm;
  float* d_head = lm_bwd ? p_.grad("lm_head.weight") : nullptr;
  if (lm_bwd) d_hn = be.alloc(DType::F32, {S, H});
  if (opt.objective) {
    // The policy objective needs the log-probs before its gradient: a forward-only head pass.
    head_loss(m_, be, W.lm_head, hn, targets, nullptr, res.logprobs, nullptr, nullptr, kept);
    std::vector<float> dlogp(size_t(S), 0.0f);
    res.loss_main = opt.objective(res.logprobs, dlogp);
    DSA_CHECK(int64_t(dlogp.size()) == S, "train: the objective resized its gradient");
    for (int64_t r = 0; r < S; ++r) g_main.push_back(dlogp[size_t(r)] * grad_scale);
    if (lm_bwd) {
      std::vector<double> again;
      head_loss(m_, be, W.lm_head, hn, targets, &g_main, again, d_hn.ptr<float>(), d_head, kept);
    }
  } else {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) g_main.push_back(wsum > 0 ? float(-double(wt(b, t)) / wsum * grad_scale) : 0.0f);
    head_loss(m_, be, W.lm_head, hn, targets, lm_bwd ? &g_main : nullptr, res.logprobs,
              lm_bwd ? d_hn.ptr<float>() : nullptr, d_head, kept);
    for (int64_t r = 0; r < S; ++r) res.loss_main -= wsum > 0 ? double(wt(r / T, r % T)) * res.logprobs[r] / wsum : 0.0;
  }
  if (mtp) {
    std::vector<int32_t> mt;
    std::vector<float> gm;
    double ws = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t + 1 < T; ++t) mt.push_back(tok(b, t + 2)), ws += wt(b, t + 1);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t + 1 < T; ++t)
        gm.push_back(ws > 0 ? float(-opt.mtp_weight * double(wt(b, t + 1)) / ws * grad_scale) : 0.0f);
    if (lm_bwd) d_hnm = be.alloc(DType::F32, {Sm, H});
    head_loss(m_, be, W.lm_head, hnm, mt, lm_bwd ? &gm : nullptr, res.mtp_logprobs,
              lm_bwd ? d_hnm.ptr<float>() : nullptr, d_head);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t + 1 < T; ++t)
        res.loss_mtp -= ws > 0 ? double(wt(b, t + 1)) * res.mtp_logprobs[size_t(b * (T - 1) + t)] / ws : 0.0;
  }
  // Balance loss and expert loads per MoE layer (main layers, then the MTP block).
  std::vector<Tensor> d_scores(static_cast<size_t>(nl));
  std::vector<std::vector<int64_t>> loads(static_cast<size_t>(nl));  // by layer; reported in layer order
  auto balance = [&](const LayerTape& t, int64_t layer, int64_t rows_per_seq) {
    std::vector<int64_t> load(size_t(E), 0);
    const std::vector<int32_t> ex = be.to_host<int32_t>(t.experts);
    if (opt.balance_alpha > 0) {
      const std::vector<float> lg = be.to_host<float>(t.logits);
      std::vector<float> ds;
      res.loss_bal += balance_loss(cfg, lg, ex, B, rows_per_seq, opt.balance_alpha, grad_scale, lm_bwd ? &ds : nullptr,
                                   load);
      if (lm_bwd) d_scores[size_t(layer)] = be.upload(ds, DType::F32);
    } else {
      for (int32_t e : ex) ++load[size_t(e)];
    }
    loads[size_t(layer)] = std::move(load);
  };
  auto finish = [&] {
    for (auto& l : loads)
      if (!l.empty()) res.expert_load.push_back(std::move(l));
    res.loss = res.loss_main + opt.mtp_weight * res.loss_mtp + res.loss_bal;
    for (double v : res.layer_kl) res.loss_kl += v;
  };
  for (int64_t i = 0; i < n; ++i)
    if (cfg.is_moe_layer(i) && tapes[size_t(i)].experts.data) balance(tapes[size_t(i)], i, T);
  if (mtp) balance(mtape, n, T - 1);
  if (!backward) {
    finish();
    return res;
  }

  // ---- backward
  const float* cosp = m_.rope_cos_dev_.ptr<float>();
  const float* sinp = m_.rope_sin_dev_.ptr<float>();
  gc.rope_cos = cosp;
  gc.rope_sin = sinp;
  float* d_embed = p_.grad("model.embed_tokens.weight");
  if (mtp && lm_bwd) {
    const MtpWeights& mw = W.mtp[0];
    const std::string pre = fmt::format("model.layers.{}.", n);
    GradContext gc{cfg, be, p_, mrows, Sm, cosp, sinp};
    Tensor d = be.alloc(DType::F32, {Sm, H});
    ops.grad->rms_norm_bwd({hm_last.ptr<bf16>(), resm_last.ptr<bf16>(), mw.head_norm.ptr<float>(), d_hnm.ptr<float>(),
                            nullptr, d.ptr<float>(), p_.grad(pre + "shared_head.norm.weight"), Sm, H, eps});
    layer_bwd(gc, mw.layer, n, mtape, d, d_scores[size_t(n)].data ? d_scores[size_t(n)].ptr<float>() : nullptr);
    // h' = bf16(eh_proj · [e ; g]).
    Tensor d_cat = be.alloc(DType::F32, {Sm, 2 * H});
    matmul(be, {d.data, ops::GemmType::F32, false, H, mw.eh_proj.data, ops::GemmType::BF16, false, 2 * H,
                d_cat.ptr<float>(), 2 * H, Sm, 2 * H, H, false});
    matmul(be, {d.data, ops::GemmType::F32, true, H, m_cat.data, ops::GemmType::BF16, false, 2 * H,
                p_.grad(pre + "eh_proj.weight"), 2 * H, H, 2 * H, Sm, true});
    Tensor d_en = be.alloc(DType::F32, {Sm, H}), d_gn = be.alloc(DType::F32, {Sm, H});
    copy_slice(be, d_cat.data, 8 * H, d_en.data, 4 * H, 4 * H, Sm);
    copy_slice(be, d_cat.ptr<float>() + H, 8 * H, d_gn.data, 4 * H, 4 * H, Sm);
    Tensor d_e = be.alloc(DType::F32, {Sm, H}), d_hng = be.alloc(DType::F32, {Sm, H});
    ops.grad->rms_norm_bwd({m_e.ptr<bf16>(), nullptr, mw.enorm.ptr<float>(), d_en.ptr<float>(), nullptr,
                            d_e.ptr<float>(), p_.grad(pre + "enorm.weight"), Sm, H, eps});
    scatter_rows_by_id(be, mtp_inputs, d_e.ptr<float>(), H, d_embed);
    ops.grad->rms_norm_bwd({m_hng.ptr<bf16>(), nullptr, mw.hnorm.ptr<float>(), d_gn.ptr<float>(), nullptr,
                            d_hng.ptr<float>(), p_.grad(pre + "hnorm.weight"), Sm, H, eps});
    std::vector<int32_t> dst, ptr = {0}, src;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t + 1 < T; ++t) {
        dst.push_back(int32_t(b * T + t));
        src.push_back(int32_t(b * (T - 1) + t));
        ptr.push_back(int32_t(src.size()));
      }
    const Tensor dd = be.upload(dst, DType::I32), pd = be.upload(ptr, DType::I32), sd = be.upload(src, DType::I32);
    ops.grad->scatter_add_rows({d_hn.ptr<float>(), d_hng.ptr<float>(), dd.ptr<int32_t>(), pd.ptr<int32_t>(),
                                sd.ptr<int32_t>(), Sm, H});
  }
  Tensor d;
  if (lm_bwd) {
    d = be.alloc(DType::F32, {S, H});
    ops.grad->rms_norm_bwd({h_last.ptr<bf16>(), res_last.ptr<bf16>(), W.final_norm.ptr<float>(), d_hn.ptr<float>(),
                          nullptr, d.ptr<float>(), p_.grad("model.norm.weight"), S, H, eps});
  }
  ForwardOptions fr = fo;  // the recompute pass: same decisions (deterministic, or replayed), nothing recorded
  fr.record = nullptr;
  for (int64_t i = n - 1; i >= 0; --i) {
    if (recompute) {
      Tensor hh = clone(be, h_in[size_t(i)]), rr;
      if (res_in[size_t(i)].data) rr = clone(be, res_in[size_t(i)]);
      h_in[size_t(i)] = res_in[size_t(i)] = Tensor{};
      LayerContext ctx{cfg, be, rows, S, cosp, sinp, fr, &tapes[size_t(i)]};
      run_layer(ctx, W.layers[size_t(i)], i, hh, rr);
      if (cfg.is_moe_layer(i)) balance(tapes[size_t(i)], i, T);
      if (kl_on) layer_kl(gc, W.layers[size_t(i)], i, tapes[size_t(i)], kb_main);
    }
    if (lm_bwd)
      layer_bwd(gc, W.layers[size_t(i)], i, tapes[size_t(i)], d,
                d_scores[size_t(i)].data ? d_scores[size_t(i)].ptr<float>() : nullptr);
    tapes[size_t(i)] = LayerTape{};
    d_scores[size_t(i)] = Tensor{};
  }
  if (lm_bwd) scatter_rows_by_id(be, inputs, d.ptr<float>(), H, d_embed);
  finish();
  return res;
}

}  // namespace dsa
