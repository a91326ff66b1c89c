// MLA with the lightning indexer (spec §5-§7): projections, cache writes, indexer scores and
// top-k, then sparse attention over the selected latents only (MHA path for a multi-token chunk,
// absorbed decode path for single tokens). All buffers live in the backend's memory.
#include <cmath>
#include <fmt/format.h>

#include "model/layer.h"

namespace dsa {

namespace {

// Byte offsets of rows into a cache pool, uploaded for a gather/scatter.
Tensor offsets(Backend& be, const std::vector<int64_t>& rows, int64_t row_bytes, int64_t extra) {
  std::vector<int64_t> off(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) off[i] = rows[i] * row_bytes + extra;
  return be.upload(off, DType::I64);
}

// Indexer (spec §7): writes index-cache rows for the new tokens; returns the top-k sets [S, K]
// (backend memory, logical positions). With score == false (dense mode) it only writes the cache.
Tensor run_indexer(const LayerContext& ctx, const LayerWeights& w, int64_t layer, const Tensor& xn, const Tensor& qr,
                   bool score) {
  const ModelConfig& c = ctx.cfg;
  Backend& be = ctx.be;
  const ops::OpTable& ops = be.ops();
  const Model::Rows& rows = ctx.rows;
  const int32_t* pos = rows.pos_dev.ptr<int32_t>();
  const int64_t S = ctx.S, H = c.hidden_size, ih = c.index_n_heads, D = c.index_head_dim, R = c.qk_rope_head_dim;
  // q = wq_b(qr) → [S, ih, D]; RoPE (half-split) on dims 0..R-1 of each head.
  Tensor q = be.alloc(DType::BF16, {S, ih, D});
  fp8_linear(be, qr.ptr<bf16>(), S, w.idx_wq_b, q.ptr<bf16>(), ih * D);
  ops.rope({q.ptr<bf16>(), pos, ctx.rope_cos, ctx.rope_sin, S, ih, D, 0, R, false});
  // k = LayerNorm(wk(x)) → [S, D]; RoPE on dims 0..R-1.
  Tensor k0 = be.alloc(DType::BF16, {S, D});
  fp8_linear(be, xn.ptr<bf16>(), S, w.idx_wk, k0.ptr<bf16>(), D);
  Tensor k = be.alloc(DType::BF16, {S, D});
  ops.layer_norm({k0.ptr<bf16>(), w.idx_k_norm_w.ptr<float>(), w.idx_k_norm_b.ptr<float>(), k.ptr<bf16>(), S, D, 1e-6f});
  ops.rope({k.ptr<bf16>(), pos, ctx.rope_cos, ctx.rope_sin, S, 1, D, 0, R, false});
  ops.hadamard({q.ptr<bf16>(), S * ih, D});
  ops.hadamard({k.ptr<bf16>(), S, D});
  dump_bf16(ctx, layer, "indexer.q", q.ptr<bf16>(), {ih, D});
  dump_bf16(ctx, layer, "indexer.k", k.ptr<bf16>(), {D});
  // FP8 with one ue8m0 scale per (token, head) and per token.
  Tensor q8 = be.alloc(DType::F8_E4M3, {S, ih, D}), qs = be.alloc(DType::F32, {S, ih});
  ops.act_quant({q.ptr<bf16>(), q8.ptr<fp8>(), qs.ptr<float>(), S * ih, D});
  Tensor k8 = be.alloc(DType::F8_E4M3, {S, D}), ks = be.alloc(DType::F32, {S});
  ops.act_quant({k.ptr<bf16>(), k8.ptr<fp8>(), ks.ptr<float>(), S, D});
  // Cache write: page p holds [page_size*D fp8][page_size fp32 scales] (offsets: Model::run).
  KvCache& kv = *rows.kv;
  const int64_t ps = kv.page_size();
  uint8_t* pool = kv.index(layer);
  ops.copy_rows({k8.ptr<uint8_t>(), pool, nullptr, rows.index_off[0].ptr<int64_t>(), D, 0, D, S});
  ops.copy_rows({ks.ptr<uint8_t>(), pool, nullptr, rows.index_off[1].ptr<int64_t>(), 4, 0, 4, S});
  if (!score) return {};
  // Head weights: fp32 weights_proj(fp32 x) * ih^-0.5, then * q_scale * D^-0.5 (left to right).
  Tensor x32 = be.alloc(DType::F32, {S, H});
  ops.convert({xn.data, x32.data, S * H, true});
  Tensor wts = be.alloc(DType::F32, {S, ih});
  ops.linear_f32({x32.ptr<float>(), w.idx_weights_proj.ptr<bf16>(), wts.ptr<float>(), S, ih, H});
  IndexerTape* it = ctx.tape && ctx.opt.score_indexer ? &ctx.tape->indexer : nullptr;
  if (it) *it = IndexerTape{q8, qs, k8, ks, k0, clone(be, wts), {}, {}};
  ops.indexer_weights({wts.ptr<float>(), qs.ptr<float>(), S * ih, float(std::pow(double(ih), -0.5)),
                       float(std::pow(double(D), -0.5))});
  dump_f32(ctx, layer, "indexer.weights", wts.ptr<float>(), {ih});
  // Scores over the visible keys 0..pos, then top-k.
  const int64_t end = rows.max_end;
  const Tensor& ends_dev = rows.ends_dev;
  Tensor scores = be.alloc(DType::F32, {S, end});
  ops.indexer_logits({q8.ptr<fp8>(), wts.ptr<float>(),
                      {pool, rows.block_table_dev.ptr<int32_t>(), rows.maxb, ps, D, kv.capacity()},
                      ends_dev.ptr<int32_t>(), scores.ptr<float>(), S, ih, end});
  const std::string sname = fmt::format("l{}.index_scores", layer);
  if (ctx.opt.dump && ctx.opt.dump->wants(sname)) {
    const auto host = be.to_host<float>(scores);
    for (int64_t s = 0; s < S; ++s) ctx.opt.dump->add_ragged(sname, host.data() + s * end, rows.pos[s] + 1, -INFINITY);
  }
  const int64_t K = c.index_topk;
  Tensor idx = be.alloc(DType::I32, {S, K});
  ops.topk({scores.ptr<float>(), ends_dev.ptr<int32_t>(), idx.ptr<int32_t>(), S, end, K});
  if (ctx.tape) ctx.tape->index_scores = scores;
  if (it) {
    it->scores = scores;
    it->topk = idx;
  }
  return idx;
}

// The key sets the attention uses: ours, replayed ones, or (dense mode) every causal key.
// Records/dumps our own. Returns [S, K] logical positions in backend memory.
Tensor select_keys(const LayerContext& ctx, const LayerWeights& w, int64_t layer, const Tensor& xn, const Tensor& qr,
                   int64_t* K_out) {
  Backend& be = ctx.be;
  const int64_t S = ctx.S;
  const std::vector<int32_t>& pos = ctx.rows.pos;
  Tensor idx = run_indexer(ctx, w, layer, xn, qr, !ctx.opt.dense || ctx.opt.score_indexer);
  int64_t K = ctx.cfg.index_topk;
  if (ctx.opt.dense) {
    K = 0;
    for (int64_t s = 0; s < S; ++s) K = std::max<int64_t>(K, pos[s] + 1);
    std::vector<int32_t> all(static_cast<size_t>(S * K), -1);
    for (int64_t s = 0; s < S; ++s)
      for (int64_t t = 0; t <= pos[s]; ++t) all[s * K + t] = int32_t(t);
    *K_out = K;
    return be.upload(all.data(), DType::I32, {S, K});
  }
  const std::string n = fmt::format("l{}.topk", layer);
  const bool dump = ctx.opt.dump && ctx.opt.dump->wants(n);
  const bool rec = ctx.opt.record && ctx.opt.record_topk;
  if (rec || dump) {
    const auto own = be.to_host<int32_t>(idx);
    if (rec) ctx.opt.record->layers[layer].topk = own;
    if (dump) {
      std::vector<float> f(own.begin(), own.end());
      ctx.opt.dump->add(n, {K}, f.data(), S);
    }
  }
  if (ctx.opt.replay && !ctx.opt.replay->layers[layer].topk.empty()) {
    const auto& r = ctx.opt.replay->layers[layer].topk;
    DSA_CHECK(int64_t(r.size()) == S * K, "replay: layer {} top-k has {} entries, expected {}", layer, r.size(), S * K);
    for (int64_t s = 0; s < S; ++s)
      for (int64_t j = 0; j < K; ++j) {
        const int32_t t = r[s * K + j];
        DSA_CHECK(t < 0 || t <= pos[s], "replay: layer {} query {} selects future key {}", layer, pos[s], t);
      }
    idx = be.upload(r.data(), DType::I32, {S, K});
  }
  *K_out = K;
  return idx;
}

}  // namespace

Tensor run_attention(const LayerContext& ctx, const LayerWeights& w, int64_t layer, const Tensor& xn) {
  const ModelConfig& c = ctx.cfg;
  Backend& be = ctx.be;
  const ops::OpTable& ops = be.ops();
  const int64_t S = ctx.S, H = c.hidden_size, nh = c.num_attention_heads;
  const int64_t nope = c.qk_nope_head_dim, R = c.qk_rope_head_dim, dqk = c.qk_head_dim(), dv = c.v_head_dim;
  const int64_t L = c.kv_lora_rank;
  const float eps = float(c.rms_norm_eps);
  const Model::Rows& rows = ctx.rows;
  const int32_t* pos = rows.pos_dev.ptr<int32_t>();

  // Queries: qr = q_norm(wq_a(x)); q = wq_b(qr) [S, nh, dqk], interleaved RoPE on dims nope..dqk.
  Tensor qa = be.alloc(DType::BF16, {S, c.q_lora_rank});
  fp8_linear(be, xn.ptr<bf16>(), S, w.q_a, qa.ptr<bf16>(), c.q_lora_rank);
  Tensor qr = be.alloc(DType::BF16, {S, c.q_lora_rank});
  ops.rms_norm({qa.ptr<bf16>(), nullptr, w.q_norm.ptr<float>(), qr.ptr<bf16>(), S, c.q_lora_rank, eps});
  dump_bf16(ctx, layer, "qr", qr.ptr<bf16>(), {c.q_lora_rank});
  Tensor q = be.alloc(DType::BF16, {S, nh, dqk});
  fp8_linear(be, qr.ptr<bf16>(), S, w.q_b, q.ptr<bf16>(), nh * dqk);
  ops.rope({q.ptr<bf16>(), pos, ctx.rope_cos, ctx.rope_sin, S, nh, dqk, nope, R, true});
  dump_bf16(ctx, layer, "q", q.ptr<bf16>(), {nh, dqk});
  LayerTape* tape = ctx.tape;
  if (tape) {
    DSA_CHECK(!rows.mha, "internal: the training forward takes the absorbed attention path");
    tape->qa = qa;
    tape->qr = qr;
    tape->q = q;
  }

  // Latent: kv = wkv_a(x) → [c (L) ; k_pe (R)]; c = kv_norm(c); k_pe gets interleaved RoPE.
  Tensor kv = be.alloc(DType::BF16, {S, L + R});
  fp8_linear(be, xn.ptr<bf16>(), S, w.kv_a, kv.ptr<bf16>(), L + R);
  Tensor craw = be.alloc(DType::BF16, {S, L});
  copy_slice(be, kv.data, (L + R) * 2, craw.data, L * 2, L * 2, S);
  Tensor cn = be.alloc(DType::BF16, {S, L});
  ops.rms_norm({craw.ptr<bf16>(), nullptr, w.kv_norm.ptr<float>(), cn.ptr<bf16>(), S, L, eps});
  ops.rope({kv.ptr<bf16>(), pos, ctx.rope_cos, ctx.rope_sin, S, 1, L + R, L, R, true});
  if (tape) {
    tape->kv = kv;
    tape->craw = craw;
  }
  // FP8 round trip of the latent = the cache write (spec §5 step 5, §9 layout).
  const ops::LatentLayout lay = rows.kv->latent_layout();
  const int64_t lb = lay.row_bytes(), nsb = ops::ceil_div(L, ops::kBlock);
  Tensor c8 = be.alloc(DType::F8_E4M3, {S, L}), cs = be.alloc(DType::F32, {S, nsb});
  ops.act_quant({cn.ptr<bf16>(), c8.ptr<fp8>(), cs.ptr<float>(), S, L});
  uint8_t* lcache = rows.kv->latent(layer);
  {
    const Tensor* o = rows.latent_off;  // fp8 part, scales, rope (Model::run)
    ops.copy_rows({c8.ptr<uint8_t>(), lcache, nullptr, o[0].ptr<int64_t>(), L, 0, L, S});
    ops.copy_rows({cs.ptr<uint8_t>(), lcache, nullptr, o[1].ptr<int64_t>(), 4 * nsb, 0, 4 * nsb, S});
    ops.copy_rows({kv.ptr<uint8_t>() + 2 * L, lcache, nullptr, o[2].ptr<int64_t>(), 2 * (L + R), 0, 2 * R, S});
  }
  if (ctx.opt.dump) {
    // Dequantised latent (what the reference keeps in its bf16 cache) and the roped k_pe.
    const auto c8h = be.to_host<uint8_t>(c8);
    const auto csh = be.to_host<float>(cs);
    std::vector<bf16> cdq(static_cast<size_t>(S * L));
    for (int64_t s = 0; s < S; ++s)
      for (int64_t j = 0; j < L; ++j) cdq[s * L + j] = f32_to_bf16(kFp8Table[c8h[s * L + j]] * csh[s * nsb + j / ops::kBlock]);
    const Tensor cdq_t = be.upload(cdq.data(), DType::BF16, {S, L});
    Tensor kpe = be.alloc(DType::BF16, {S, R});
    copy_slice(be, kv.ptr<bf16>() + L, (L + R) * 2, kpe.data, R * 2, R * 2, S);
    dump_bf16(ctx, layer, "kv", cdq_t.ptr<bf16>(), {L});
    dump_bf16(ctx, layer, "k_pe", kpe.ptr<bf16>(), {R});
  }

  int64_t K = 0;
  const Tensor idx = select_keys(ctx, w, layer, xn, qr, &K);
  if (tape) {
    tape->idx = idx;
    tape->K = K;
  }
  const float scale = float(c.softmax_scale());
  Tensor o = be.alloc(DType::BF16, {S, nh, dv});
  if (rows.mha) {
    // MHA path (spec §6.1): per-head k_nope and v from wkv_b, for the union of the keys this
    // chunk's queries selected only (true sparse prefill: unselected cache rows are never read
    // and never expanded). The cache holds exactly act_quant(c), so it feeds the FP8 GEMM
    // directly (re-quantising is lossless).
    const SequenceState& seq = *rows.seqs[0];
    std::vector<int32_t> sel = be.to_host<int32_t>(idx);
    std::vector<int32_t> compact(static_cast<size_t>(rows.pos[S - 1] + 1), -1);
    for (int32_t t : sel)
      if (t >= 0) compact[t] = 0;
    std::vector<int64_t> key_rows;
    for (size_t t = 0; t < compact.size(); ++t)
      if (compact[t] == 0) {
        compact[t] = int32_t(key_rows.size());
        key_rows.push_back(seq.row(int64_t(t)));
      }
    for (int32_t& t : sel) t = t < 0 ? -1 : compact[t];
    const Tensor idx_c = be.upload(sel.data(), DType::I32, {S, K});
    const int64_t end = int64_t(key_rows.size());  // keys expanded (≤ context)
    Tensor a8 = be.alloc(DType::F8_E4M3, {end, L}), as = be.alloc(DType::F32, {end, nsb});
    Tensor pe = be.alloc(DType::BF16, {end, R});
    {
      const Tensor o0 = offsets(be, key_rows, lb, 0), o1 = offsets(be, key_rows, lb, lay.scale_off()),
                   o2 = offsets(be, key_rows, lb, lay.rope_off());
      ops.copy_rows({lcache, a8.ptr<uint8_t>(), o0.ptr<int64_t>(), nullptr, 0, L, L, end});
      ops.copy_rows({lcache, as.ptr<uint8_t>(), o1.ptr<int64_t>(), nullptr, 0, 4 * nsb, 4 * nsb, end});
      ops.copy_rows({lcache, pe.ptr<uint8_t>(), o2.ptr<int64_t>(), nullptr, 0, 2 * R, 2 * R, end});
    }
    Tensor kvb = be.alloc(DType::BF16, {end, nh, nope + dv});
    ops.fp8_gemm({a8.ptr<fp8>(), as.ptr<float>(), w.kv_b.w.ptr<fp8>(), w.kv_b.s.ptr<float>(), kvb.ptr<bf16>(), end,
                  w.kv_b.out, L, w.kv_b.out});
    // k = [k_nope ; k_pe broadcast over heads], v: per-(token, head) row copies.
    Tensor k = be.alloc(DType::BF16, {end, nh, dqk});
    Tensor v = be.alloc(DType::BF16, {end, nh, dv});
    copy_slice(be, kvb.data, (nope + dv) * 2, k.data, dqk * 2, nope * 2, end * nh);
    copy_slice(be, kvb.ptr<bf16>() + nope, (nope + dv) * 2, v.data, dv * 2, dv * 2, end * nh);
    std::vector<int64_t> pe_src(static_cast<size_t>(end * nh));
    for (int64_t t = 0; t < end; ++t)
      for (int64_t hh = 0; hh < nh; ++hh) pe_src[t * nh + hh] = t * R * 2;
    const Tensor pso = be.upload(pe_src, DType::I64);
    ops.copy_rows({pe.ptr<uint8_t>(), k.ptr<uint8_t>() + nope * 2, pso.ptr<int64_t>(), nullptr, 0, dqk * 2, R * 2,
                   end * nh});
    ops.sparse_mha_prefill({q.ptr<bf16>(), k.ptr<bf16>(), v.ptr<bf16>(), idx_c.ptr<int32_t>(), o.ptr<bf16>(), S, end,
                            nh, dqk, dv, K, scale});
  } else {
    // Absorbed path (spec §6.2): q_abs = q_nope · W_UK; attention over latents; o = o_lat · W_UV^T.
    const bf16* wkv = w.wkv_b_bf16.ptr<bf16>();  // [nh, nope+dv, L]
    Tensor q_abs = be.alloc(DType::BF16, {S, nh, L});
    ops.head_matmul({q.ptr<bf16>(), wkv, q_abs.ptr<bf16>(), S, nh, nope, L, nh * dqk, dqk, (nope + dv) * L, L, false});
    Tensor q_pe = be.alloc(DType::BF16, {S, nh, R});
    copy_slice(be, q.ptr<bf16>() + nope, dqk * 2, q_pe.data, R * 2, R * 2, S * nh);
    // Selected positions → physical cache rows through each row's block table.
    Tensor phys = be.alloc(DType::I32, {S, K});
    ops.paged_rows({idx.ptr<int32_t>(), phys.ptr<int32_t>(), rows.block_table_dev.ptr<int32_t>(), rows.maxb,
                    rows.kv->page_size(), S, K});
    Tensor o_lat = be.alloc(DType::BF16, {S, nh, L});
    ops.sparse_mla_decode({q_abs.ptr<bf16>(), q_pe.ptr<bf16>(), lcache, phys.ptr<int32_t>(), o_lat.ptr<bf16>(), S, nh,
                           rows.kv->capacity() * rows.kv->page_size(), K, lay, scale});
    ops.head_matmul({o_lat.ptr<bf16>(), wkv + nope * L, o.ptr<bf16>(), S, nh, L, dv, nh * L, L, (nope + dv) * L, L, true});
    if (tape) {
      tape->q_abs = q_abs;
      tape->q_pe = q_pe;
      tape->phys = phys;
      tape->o_lat = o_lat;
      tape->o = o;
    }
  }
  dump_bf16(ctx, layer, "attn_o", o.ptr<bf16>(), {nh * dv});
  Tensor out = be.alloc(DType::BF16, {S, H});
  fp8_linear(be, o.ptr<bf16>(), S, w.o, out.ptr<bf16>(), H);
  return out;
}

}  // namespace dsa
