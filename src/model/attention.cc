// MLA with the lightning indexer (spec §5-§7): projections, cache writes, indexer scores and
// top-k, then sparse attention over the selected latents only (MHA path for S > 1, absorbed
// decode path for S == 1).
#include <cmath>
#include <fmt/format.h>

#include "model/layer.h"

namespace dsa {

namespace {

// Indexer (spec §7): writes index-cache rows for the new tokens; returns top-k sets [S, topk].
// With score == false (dense attention mode) only the index-cache rows are written.
std::vector<int32_t> run_indexer(const LayerContext& ctx, const LayerWeights& w, int64_t layer, const Tensor& xn,
                                 const Tensor& qr, const std::vector<int32_t>& pos, bool score) {
  const ModelConfig& c = ctx.cfg;
  const ops::OpTable& ops = ctx.ops;
  const Model::Rows& rows = ctx.rows;
  const int64_t S = ctx.S, H = c.hidden_size, ih = c.index_n_heads, D = c.index_head_dim, R = c.qk_rope_head_dim;
  // q = wq_b(qr) → [S, ih, D]; RoPE (half-split) on dims 0..R-1 of each head.
  Tensor q = Tensor::empty(DType::BF16, {S, ih, D});
  fp8_linear(ops, qr.ptr<bf16>(), S, w.idx_wq_b, q.ptr<bf16>(), ih * D);
  ops.rope({q.ptr<bf16>(), pos.data(), ctx.rope_cos, ctx.rope_sin, S, ih, D, 0, R, false});
  // k = LayerNorm(wk(x)) → [S, D]; RoPE on dims 0..R-1.
  Tensor k0 = Tensor::empty(DType::BF16, {S, D});
  fp8_linear(ops, xn.ptr<bf16>(), S, w.idx_wk, k0.ptr<bf16>(), D);
  Tensor k = Tensor::empty(DType::BF16, {S, D});
  ops.layer_norm({k0.ptr<bf16>(), w.idx_k_norm_w.ptr<float>(), w.idx_k_norm_b.ptr<float>(), k.ptr<bf16>(), S, D, 1e-6f});
  ops.rope({k.ptr<bf16>(), pos.data(), ctx.rope_cos, ctx.rope_sin, S, 1, D, 0, R, false});
  ops.hadamard({q.ptr<bf16>(), S * ih, D});
  ops.hadamard({k.ptr<bf16>(), S, D});
  dump_bf16(ctx, layer, "indexer.q", q.ptr<bf16>(), {ih, D});
  dump_bf16(ctx, layer, "indexer.k", k.ptr<bf16>(), {D});
  // FP8 with one ue8m0 scale per (token, head) and per token.
  std::vector<fp8> q8(static_cast<size_t>(S * ih * D));
  std::vector<float> qs(static_cast<size_t>(S * ih));
  ops.act_quant({q.ptr<bf16>(), q8.data(), qs.data(), S * ih, D});
  std::vector<fp8> k8(static_cast<size_t>(S * D));
  std::vector<float> ks(static_cast<size_t>(S));
  ops.act_quant({k.ptr<bf16>(), k8.data(), ks.data(), S, D});
  KvCache& kv = *rows.kv;
  const int64_t ps = kv.page_size(), pb = kv.index_page_bytes();
  uint8_t* pool = kv.index(layer);
  for (int64_t s = 0; s < S; ++s) {
    const int64_t page = rows.write_row[s] / ps, slot = rows.write_row[s] % ps;
    uint8_t* base = pool + page * pb;
    std::copy(k8.begin() + s * D, k8.begin() + (s + 1) * D, base + slot * D);
    std::memcpy(base + ps * D + 4 * slot, &ks[s], 4);
  }
  if (!score) return {};
  // Head weights: fp32 weights_proj(fp32 x) * ih^-0.5, then * q_scale * D^-0.5 (left to right).
  std::vector<float> x32(static_cast<size_t>(S * H));
  for (int64_t i = 0; i < S * H; ++i) x32[i] = bf16_to_f32(xn.ptr<bf16>()[i]);
  std::vector<float> wts(static_cast<size_t>(S * ih));
  ops.linear_f32({x32.data(), w.idx_weights_proj.ptr<bf16>(), wts.data(), S, ih, H});
  const float head_scale = float(std::pow(double(ih), -0.5)), soft = float(std::pow(double(D), -0.5));
  for (int64_t i = 0; i < S * ih; ++i) wts[i] = (wts[i] * head_scale) * qs[i] * soft;
  if (ctx.opt.dump && ctx.opt.dump->wants(fmt::format("l{}.indexer.weights", layer)))
    ctx.opt.dump->add(fmt::format("l{}.indexer.weights", layer), {ih}, wts.data(), S);
  // Scores over the visible keys 0..pos, then top-k.
  std::vector<int32_t> ends(static_cast<size_t>(S));
  int64_t end = 0;
  for (int64_t s = 0; s < S; ++s) end = std::max<int64_t>(end, ends[s] = pos[s] + 1);
  std::vector<float> scores(static_cast<size_t>(S * end));
  ops.indexer_logits({q8.data(), wts.data(), {pool, rows.block_table.data(), rows.maxb, ps, D, kv.capacity()},
                      ends.data(), scores.data(), S, ih, end});
  const std::string sname = fmt::format("l{}.index_scores", layer);
  if (ctx.opt.dump && ctx.opt.dump->wants(sname))
    for (int64_t s = 0; s < S; ++s) ctx.opt.dump->add_ragged(sname, scores.data() + s * end, ends[s], -INFINITY);
  const int64_t K = c.index_topk;
  std::vector<int32_t> idx(static_cast<size_t>(S * K));
  ops.topk({scores.data(), ends.data(), idx.data(), S, end, K});
  return idx;
}

}  // namespace

Tensor run_attention(const LayerContext& ctx, const LayerWeights& w, int64_t layer, const Tensor& xn) {
  const ModelConfig& c = ctx.cfg;
  const ops::OpTable& ops = ctx.ops;
  const int64_t S = ctx.S, H = c.hidden_size, nh = c.num_attention_heads;
  const int64_t nope = c.qk_nope_head_dim, R = c.qk_rope_head_dim, dqk = c.qk_head_dim(), dv = c.v_head_dim;
  const int64_t L = c.kv_lora_rank;
  const float eps = float(c.rms_norm_eps);
  const Model::Rows& rows = ctx.rows;
  const std::vector<int32_t>& pos = rows.pos;

  // Queries: qr = q_norm(wq_a(x)); q = wq_b(qr) [S, nh, dqk], interleaved RoPE on dims nope..dqk.
  Tensor qa = Tensor::empty(DType::BF16, {S, c.q_lora_rank});
  fp8_linear(ops, xn.ptr<bf16>(), S, w.q_a, qa.ptr<bf16>(), c.q_lora_rank);
  Tensor qr = Tensor::empty(DType::BF16, {S, c.q_lora_rank});
  ops.rms_norm({qa.ptr<bf16>(), nullptr, w.q_norm.ptr<float>(), qr.ptr<bf16>(), S, c.q_lora_rank, eps});
  dump_bf16(ctx, layer, "qr", qr.ptr<bf16>(), {c.q_lora_rank});
  Tensor q = Tensor::empty(DType::BF16, {S, nh, dqk});
  fp8_linear(ops, qr.ptr<bf16>(), S, w.q_b, q.ptr<bf16>(), nh * dqk);
  ops.rope({q.ptr<bf16>(), pos.data(), ctx.rope_cos, ctx.rope_sin, S, nh, dqk, nope, R, true});
  dump_bf16(ctx, layer, "q", q.ptr<bf16>(), {nh, dqk});

  // Latent: kv = wkv_a(x) → [c (L) ; k_pe (R)]; c = kv_norm(c); k_pe gets interleaved RoPE.
  Tensor kv = Tensor::empty(DType::BF16, {S, L + R});
  fp8_linear(ops, xn.ptr<bf16>(), S, w.kv_a, kv.ptr<bf16>(), L + R);
  Tensor craw = Tensor::empty(DType::BF16, {S, L});
  for (int64_t s = 0; s < S; ++s)
    std::copy(kv.ptr<bf16>() + s * (L + R), kv.ptr<bf16>() + s * (L + R) + L, craw.ptr<bf16>() + s * L);
  Tensor cn = Tensor::empty(DType::BF16, {S, L});
  ops.rms_norm({craw.ptr<bf16>(), nullptr, w.kv_norm.ptr<float>(), cn.ptr<bf16>(), S, L, eps});
  ops.rope({kv.ptr<bf16>(), pos.data(), ctx.rope_cos, ctx.rope_sin, S, 1, L + R, L, R, true});
  // FP8 round trip of the latent = the cache write (spec §5 step 5, §9 layout).
  const ops::LatentLayout lay = rows.kv->latent_layout();
  const int64_t lb = lay.row_bytes(), nsb = ops::ceil_div(L, ops::kBlock);
  std::vector<fp8> c8(static_cast<size_t>(S * L));
  std::vector<float> cs(static_cast<size_t>(S * nsb));
  ops.act_quant({cn.ptr<bf16>(), c8.data(), cs.data(), S, L});
  uint8_t* lcache = rows.kv->latent(layer);
  for (int64_t s = 0; s < S; ++s) {
    uint8_t* row = lcache + rows.write_row[s] * lb;
    std::copy(c8.begin() + s * L, c8.begin() + (s + 1) * L, row);
    std::memcpy(row + lay.scale_off(), cs.data() + s * nsb, size_t(4 * nsb));
    std::memcpy(row + lay.rope_off(), kv.ptr<bf16>() + s * (L + R) + L, size_t(2 * R));
  }
  if (ctx.opt.dump) {
    Tensor cdq = Tensor::empty(DType::BF16, {S, L}), kpe = Tensor::empty(DType::BF16, {S, R});
    for (int64_t s = 0; s < S; ++s) {
      for (int64_t j = 0; j < L; ++j)
        cdq.ptr<bf16>()[s * L + j] = f32_to_bf16(kFp8Table[c8[s * L + j]] * cs[s * nsb + j / ops::kBlock]);
      std::copy(kv.ptr<bf16>() + s * (L + R) + L, kv.ptr<bf16>() + (s + 1) * (L + R), kpe.ptr<bf16>() + s * R);
    }
    dump_bf16(ctx, layer, "kv", cdq.ptr<bf16>(), {L});
    dump_bf16(ctx, layer, "k_pe", kpe.ptr<bf16>(), {R});
  }

  // Indexer → our own top-k sets; replayed sets replace them for the attention if given.
  // Dense mode (benchmarks): every causal key, indexer scoring skipped.
  std::vector<int32_t> idx = run_indexer(ctx, w, layer, xn, qr, pos, !ctx.opt.dense);
  int64_t K = c.index_topk;
  if (ctx.opt.dense) {
    K = pos[0] + 1;
    for (int64_t s = 0; s < S; ++s) K = std::max<int64_t>(K, pos[s] + 1);
    idx.assign(static_cast<size_t>(S * K), -1);
    for (int64_t s = 0; s < S; ++s)
      for (int64_t t = 0; t <= pos[s]; ++t) idx[s * K + t] = int32_t(t);
  }
  if (ctx.opt.record) ctx.opt.record->layers[layer].topk = idx;
  if (ctx.opt.dump && !ctx.opt.dense) {
    const std::string n = fmt::format("l{}.topk", layer);
    if (ctx.opt.dump->wants(n)) {
      std::vector<float> f(idx.begin(), idx.end());
      ctx.opt.dump->add(n, {K}, f.data(), S);
    }
  }
  if (ctx.opt.replay && !ctx.opt.dense) {
    const auto& r = ctx.opt.replay->layers[layer].topk;
    DSA_CHECK(int64_t(r.size()) == S * K, "replay: layer {} top-k has {} entries, expected {}", layer, r.size(), S * K);
    for (int64_t s = 0; s < S; ++s)
      for (int64_t j = 0; j < K; ++j) {
        const int32_t t = r[s * K + j];
        DSA_CHECK(t < 0 || t <= pos[s], "replay: layer {} query {} selects future key {}", layer, pos[s], t);
      }
    idx = r;
  }

  const float scale = float(c.softmax_scale());
  Tensor o = Tensor::empty(DType::BF16, {S, nh, dv});
  if (rows.mha) {
    // MHA path (spec §6.1): per-head k_nope and v from wkv_b over the cached latents of keys
    // 0..end-1. The cache holds exactly act_quant(c), so it feeds the FP8 GEMM directly
    // (re-quantising is lossless).
    const SequenceState& seq = *rows.seqs[0];
    const int64_t end = pos[S - 1] + 1;
    std::vector<fp8> a8(static_cast<size_t>(end * L));
    std::vector<float> as(static_cast<size_t>(end * nsb));
    for (int64_t t = 0; t < end; ++t) {
      const uint8_t* row = lcache + seq.row(t) * lb;
      std::copy(row, row + L, a8.begin() + t * L);
      std::memcpy(as.data() + t * nsb, row + lay.scale_off(), size_t(4 * nsb));
    }
    Tensor kvb = Tensor::empty(DType::BF16, {end, nh, nope + dv});
    ops.fp8_gemm({a8.data(), as.data(), w.kv_b.w.ptr<fp8>(), w.kv_b.s.ptr<float>(), kvb.ptr<bf16>(), end,
                  w.kv_b.out, L, w.kv_b.out});
    Tensor k = Tensor::empty(DType::BF16, {end, nh, dqk});
    Tensor v = Tensor::empty(DType::BF16, {end, nh, dv});
    for (int64_t t = 0; t < end; ++t) {
      const bf16* pe = reinterpret_cast<const bf16*>(lcache + seq.row(t) * lb + lay.rope_off());
      for (int64_t hh = 0; hh < nh; ++hh) {
        const bf16* src = kvb.ptr<bf16>() + (t * nh + hh) * (nope + dv);
        bf16* kd = k.ptr<bf16>() + (t * nh + hh) * dqk;
        std::copy(src, src + nope, kd);
        std::copy(pe, pe + R, kd + nope);
        std::copy(src + nope, src + nope + dv, v.ptr<bf16>() + (t * nh + hh) * dv);
      }
    }
    ops.sparse_mha_prefill({q.ptr<bf16>(), k.ptr<bf16>(), v.ptr<bf16>(), idx.data(), o.ptr<bf16>(), S, end, nh, dqk,
                            dv, K, scale});
  } else {
    // Absorbed path (spec §6.2): q_abs = q_nope · W_UK; attention over latents; o = o_lat · W_UV^T.
    const bf16* wkv = w.wkv_b_bf16.ptr<bf16>();  // [nh, nope+dv, L]
    Tensor q_abs = Tensor::empty(DType::BF16, {S, nh, L});
    ops.head_matmul({q.ptr<bf16>(), wkv, q_abs.ptr<bf16>(), S, nh, nope, L, nh * dqk, dqk, (nope + dv) * L, L, false});
    Tensor q_pe = Tensor::empty(DType::BF16, {S, nh, R});
    for (int64_t i = 0; i < S * nh; ++i)
      std::copy(q.ptr<bf16>() + i * dqk + nope, q.ptr<bf16>() + (i + 1) * dqk, q_pe.ptr<bf16>() + i * R);
    // Selected positions → physical cache rows (each row's own sequence).
    std::vector<int32_t> phys(idx.size());
    for (int64_t s = 0; s < S; ++s)
      for (int64_t j = 0; j < K; ++j) {
        const int32_t t = idx[s * K + j];
        phys[s * K + j] = t < 0 ? -1 : int32_t(rows.seqs[s]->row(t));
      }
    Tensor o_lat = Tensor::empty(DType::BF16, {S, nh, L});
    ops.sparse_mla_decode({q_abs.ptr<bf16>(), q_pe.ptr<bf16>(), lcache, phys.data(), o_lat.ptr<bf16>(), S, nh,
                           rows.kv->capacity() * rows.kv->page_size(), K, lay, scale});
    ops.head_matmul({o_lat.ptr<bf16>(), wkv + nope * L, o.ptr<bf16>(), S, nh, L, dv, nh * L, L, (nope + dv) * L, L, true});
  }
  dump_bf16(ctx, layer, "attn_o", o.ptr<bf16>(), {nh * dv});
  Tensor out = Tensor::empty(DType::BF16, {S, H});
  fp8_linear(ops, o.ptr<bf16>(), S, w.o, out.ptr<bf16>(), H);
  return out;
}

}  // namespace dsa
