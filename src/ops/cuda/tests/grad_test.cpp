// CUDA training ops (ops/grad.h) against the reference. Bounds: exact where the op is
// order-free (quantisers, AdamW, the ordered sum of squares, axpy); fp32 sums against the
// reference's double sums elsewhere (relative 1e-4 for row reductions of ~100-7000 terms); the
// attention backward recomputes bf16 probabilities with expf, which can flip one bf16 rounding:
// relative L2 1e-2 (a wrong term is O(1)).
#include "ops/cuda/tests/test_util.h"

#include "ops/grad.h"

namespace dsa::ops::cuda::test {
namespace {
const GradTable& R = *ref_ops().grad;

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double n = 0, d = 0;
  for (size_t i = 0; i < a.size(); ++i) n += (double(a[i]) - b[i]) * (double(a[i]) - b[i]), d += double(b[i]) * b[i];
  return std::sqrt(n / std::max(d, 1e-300));
}

TEST(CudaGrad, GemmAllLayouts) {
  for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{7, 70, 33}, {256, 512, 384}, {1, 129, 1000}})
    for (int v = 0; v < 8; ++v) {
      const bool ta_b = v & 1, tb_b = v & 2, tr_a = v & 4, tr_b = (v >> 1) & 1;
      const int64_t lda = tr_a ? M : K, ldb = tr_b ? K : N, batch = 2;
      auto af = rand_f32(size_t(batch * M * K), -1, 1), bfv = rand_f32(size_t(batch * K * N), -1, 1);
      std::vector<bf16> ab(af.size()), bb(bfv.size());
      for (size_t i = 0; i < af.size(); ++i) ab[i] = f32_to_bf16(af[i]), af[i] = bf16_to_f32(ab[i]);
      for (size_t i = 0; i < bfv.size(); ++i) bb[i] = f32_to_bf16(bfv[i]), bfv[i] = bf16_to_f32(bb[i]);
      auto c0 = rand_f32(size_t(batch * M * N), -1, 1), c = c0;
      const GemmType ta = ta_b ? GemmType::BF16 : GemmType::F32, tb = tb_b ? GemmType::BF16 : GemmType::F32;
      R.gemm({ta_b ? (const void*)ab.data() : af.data(), tb_b ? (const void*)bb.data() : bfv.data(), c.data(), ta, tb,
              M, N, K, lda, ldb, N, tr_a, tr_b, true, batch, M * K, K * N, M * N});
      DevBuf<float> da(af), db(bfv), dc(c0);
      DevBuf<bf16> dab(ab), dbb(bb);
      gemm({ta_b ? (const void*)dab.p : da.p, tb_b ? (const void*)dbb.p : db.p, dc.p, ta, tb, M, N, K, lda, ldb, N, tr_a,
            tr_b, true, batch, M * K, K * N, M * N},
           nullptr);
      const auto got = dc.down();
      for (size_t i = 0; i < c.size(); ++i)  // |a|,|b| <= 1: K * 2^-22 covers fp32 accumulation
        ASSERT_NEAR(got[i], c[i], double(K) * std::ldexp(1.0, -22) + 1e-6) << M << "x" << N << "x" << K << " v" << v;
    }
}

TEST(CudaGrad, QuantisersExact) {
  const int64_t Rr = 300, C = 200;
  auto x = rand_f32(size_t(Rr * C), -0.3f, 0.3f);
  std::vector<fp8> q(x.size());
  std::vector<float> s(size_t(3 * 2));
  R.weight_quant({x.data(), q.data(), s.data(), Rr, C});
  DevBuf<float> dx(x), ds(s.size());
  DevBuf<fp8> dq(q.size());
  weight_quant({dx.p, dq.p, ds.p, Rr, C}, nullptr);
  EXPECT_EQ(dq.down(), q);
  EXPECT_EQ(ds.down(), s);
  std::vector<bf16> o(x.size());
  R.dequant({q.data(), s.data(), o.data(), Rr, C, 128, true});
  DevBuf<bf16> dout(o.size());
  dequant({dq.p, ds.p, dout.p, Rr, C, 128, true}, nullptr);
  const auto got = dout.down();
  for (size_t i = 0; i < o.size(); ++i) ASSERT_EQ(got[i].bits, o[i].bits) << i;
}

TEST(CudaGrad, NormsRopeHadamardSwiGlu) {
  const int64_t M = 70, D = 384;
  auto x = rand_bf16(size_t(M * D)), res = rand_bf16(size_t(M * D));
  auto w = rand_f32(size_t(D), 0.5f, 1.5f), b = rand_f32(size_t(D), -1, 1), dy = rand_f32(size_t(M * D), -1, 1),
       dres = rand_f32(size_t(M * D), -1, 1);
  std::vector<float> dx(dy.size()), dw(size_t(D), 0.5f), db(size_t(D), 0.0f);
  R.rms_norm_bwd({x.data(), res.data(), w.data(), dy.data(), dres.data(), dx.data(), dw.data(), M, D, 1e-6f});
  DevBuf<bf16> gx(x), gres(res);
  DevBuf<float> gw(w), gdy(dy), gdres(dres), gdx(dx.size()), gdw(std::vector<float>(size_t(D), 0.5f)), gb(b),
      gdb(std::vector<float>(size_t(D), 0.0f));
  rms_norm_bwd({gx.p, gres.p, gw.p, gdy.p, gdres.p, gdx.p, gdw.p, M, D, 1e-6f}, nullptr);
  EXPECT_LT(rel_l2(gdx.down(), dx), 1e-4);
  EXPECT_LT(rel_l2(gdw.down(), dw), 1e-4);
  std::fill(dw.begin(), dw.end(), 0.0f);
  gdw.up(std::vector<float>(size_t(D), 0.0f));
  R.layer_norm_bwd({x.data(), w.data(), dy.data(), dx.data(), dw.data(), db.data(), M, D, 1e-6f});
  layer_norm_bwd({gx.p, gw.p, gdy.p, gdx.p, gdw.p, gdb.p, M, D, 1e-6f}, nullptr);
  EXPECT_LT(rel_l2(gdx.down(), dx), 1e-4);
  EXPECT_LT(rel_l2(gdw.down(), dw), 1e-4);
  EXPECT_LT(rel_l2(gdb.down(), db), 1e-4);
  for (bool inter : {true, false}) {
    const int64_t H = 3, stride = 192, off = 128, rd = 64;
    std::vector<float> cosv(size_t(100 * 32)), sinv(cosv.size());
    for (size_t i = 0; i < cosv.size(); ++i) cosv[i] = std::cos(0.01f * i), sinv[i] = std::sin(0.01f * i);
    std::vector<int32_t> pos(static_cast<size_t>(M));
    for (int64_t m = 0; m < M; ++m) pos[size_t(m)] = int32_t(m % 100);
    auto g = rand_f32(size_t(M * H * stride), -1, 1), g2 = g;
    R.rope_bwd({g.data(), pos.data(), cosv.data(), sinv.data(), M, H, stride, off, rd, inter});
    DevBuf<float> dg(g2), dc(cosv), dsn(sinv);
    DevBuf<int32_t> dp(pos);
    rope_bwd({dg.p, dp.p, dc.p, dsn.p, M, H, stride, off, rd, inter}, nullptr);
    EXPECT_LT(rel_l2(dg.down(), g), 1e-6);
  }
  auto h = rand_f32(size_t(M * 128), -1, 1), h2 = h;
  R.hadamard_f32({h.data(), M, 128});
  DevBuf<float> dh(h2);
  hadamard_f32({dh.p, M, 128}, nullptr);
  EXPECT_LT(rel_l2(dh.down(), h), 1e-6);
  auto gg = rand_bf16(size_t(M * D), 2.0f), uu = rand_bf16(size_t(M * D));
  std::vector<float> dgg(dy.size()), duu(dy.size());
  R.silu_mul_bwd({gg.data(), uu.data(), dy.data(), dgg.data(), duu.data(), M, D});
  DevBuf<bf16> ggd(gg), uud(uu);
  DevBuf<float> dgd(dgg.size()), dud(duu.size());
  silu_mul_bwd({ggd.p, uud.p, gdy.p, dgd.p, dud.p, M, D}, nullptr);
  EXPECT_LT(rel_l2(dgd.down(), dgg), 1e-6);
  EXPECT_LT(rel_l2(dud.down(), duu), 1e-6);
}

TEST(CudaGrad, SparseMlaBackward) {
  const int64_t S = 9, H = 16, L = 512, Rp = 64, K = 40, N = 64;
  const LatentLayout lay{L, Rp};
  const int64_t rb = lay.row_bytes();
  std::vector<uint8_t> cache(size_t(N * rb));
  for (int64_t r = 0; r < N; ++r) {
    auto codes = rand_fp8(size_t(L));
    std::copy(codes.begin(), codes.end(), cache.begin() + r * rb);
    for (int64_t b = 0; b < L / 128; ++b) {
      const float sc = std::ldexp(1.0f, -8 - int(b % 2));
      std::memcpy(cache.data() + r * rb + lay.scale_off() + 4 * b, &sc, 4);
    }
    auto pe = rand_bf16(size_t(Rp), 0.5f);
    std::memcpy(cache.data() + r * rb + lay.rope_off(), pe.data(), size_t(Rp) * 2);
  }
  std::vector<int32_t> idx(size_t(S * K));
  for (int64_t s = 0; s < S; ++s)
    for (int64_t j = 0; j < K; ++j) idx[size_t(s * K + j)] = (j % 7 == 3) ? -1 : int32_t((s * 5 + j * 3) % N);
  auto qa = rand_bf16(size_t(S * H * L), 0.3f), qp = rand_bf16(size_t(S * H * Rp), 0.3f);
  auto dov = rand_f32(size_t(S * H * L), -1, 1);
  std::vector<float> dqa(qa.size()), dqp(qp.size()), P(size_t(S * H * K)), G(P.size());
  const float scale = 0.1352f;
  R.sparse_mla_bwd_q({qa.data(), qp.data(), cache.data(), idx.data(), dov.data(), dqa.data(), dqp.data(), P.data(),
                      G.data(), S, H, N, K, lay, scale});
  DevBuf<uint8_t> dcache(cache);
  DevBuf<int32_t> didx(idx);
  DevBuf<bf16> dqad(qa), dqpd(qp);
  DevBuf<float> dod(dov), gqa(dqa.size()), gqp(dqp.size()), gP(P.size()), gG(G.size());
  sparse_mla_bwd_q({dqad.p, dqpd.p, dcache.p, didx.p, dod.p, gqa.p, gqp.p, gP.p, gG.p, S, H, N, K, lay, scale}, nullptr);
  EXPECT_LT(rel_l2(gqa.down(), dqa), 1e-2);
  EXPECT_LT(rel_l2(gqp.down(), dqp), 1e-2);
  EXPECT_LT(rel_l2(gP.down(), P), 1e-2);
  // Phase 2 from the reference's P, G so that only the key reduction is compared.
  std::vector<int32_t> ptr = {0}, list;
  for (int32_t r = 0; r < N; ++r) {
    for (int64_t e = 0; e < S * K; ++e)
      if (idx[size_t(e)] == r) list.push_back(int32_t(e));
    ptr.push_back(int32_t(list.size()));
  }
  std::vector<float> dkv(size_t(N * (L + Rp)));
  R.sparse_mla_bwd_kv({qa.data(), qp.data(), dov.data(), P.data(), G.data(), ptr.data(), list.data(), dkv.data(), N, S, H,
                       K, L, Rp});
  DevBuf<float> rP(P), rG(G), gkv(dkv.size());
  DevBuf<int32_t> dptr(ptr), dlist(list);
  sparse_mla_bwd_kv({dqad.p, dqpd.p, dod.p, rP.p, rG.p, dptr.p, dlist.p, gkv.p, N, S, H, K, L, Rp}, nullptr);
  EXPECT_LT(rel_l2(gkv.down(), dkv), 1e-5);
}

TEST(CudaGrad, MoeLogitsOptimiser) {
  const int64_t T = 33, E = 16, k = 4, Hd = 96;
  auto logits = rand_f32(size_t(T * E), -3, 3), dw = rand_f32(size_t(T * k), -1, 1), ds = rand_f32(size_t(T * E), -1, 1);
  std::vector<int32_t> ex(size_t(T * k));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j) ex[size_t(t * k + j)] = int32_t((t + 3 * j) % E);
  std::vector<float> dl(logits.size());
  R.moe_gate_bwd({logits.data(), ex.data(), dw.data(), ds.data(), dl.data(), T, E, k, true, 2.5f});
  DevBuf<float> gl(logits), gdw(dw), gds(ds), gdl(dl.size());
  DevBuf<int32_t> gex(ex);
  moe_gate_bwd({gl.p, gex.p, gdw.p, gds.p, gdl.p, T, E, k, true, 2.5f}, nullptr);
  EXPECT_LT(rel_l2(gdl.down(), dl), 1e-5);
  // combine backward
  const int64_t Rr = T * k;
  std::vector<int32_t> pos(size_t(T * k));
  for (int64_t i = 0; i < T * k; ++i) pos[size_t(i)] = int32_t((i * 7) % Rr);
  auto y = rand_bf16(size_t(Rr * Hd));
  auto wr = rand_f32(size_t(Rr), 0, 1), dacc = rand_f32(size_t(T * Hd), -1, 1);
  std::vector<float> dy(y.size()), dwr(wr.size());
  R.moe_combine_bwd({dacc.data(), y.data(), pos.data(), wr.data(), dy.data(), dwr.data(), T, k, Hd, Rr});
  DevBuf<float> gacc(dacc), gw(wr), gdy(dy.size()), gdwr(dwr.size());
  DevBuf<bf16> gy(y);
  DevBuf<int32_t> gpos(pos);
  moe_combine_bwd({gacc.p, gy.p, gpos.p, gw.p, gdy.p, gdwr.p, T, k, Hd, Rr}, nullptr);
  EXPECT_LT(rel_l2(gdy.down(), dy), 1e-7);
  EXPECT_LT(rel_l2(gdwr.down(), dwr), 1e-5);
  // log-softmax gradient (V of DeepSeek's vocabulary)
  const int64_t M = 5, V = 129280;
  auto z = rand_f32(size_t(M * V), -8, 8), g = rand_f32(size_t(M), -1, 1);
  std::vector<int32_t> tgt = {0, 7, 129279, 500, 4};
  std::vector<double> lp(static_cast<size_t>(M));
  std::vector<float> dz(z.size());
  R.logits_grad({z.data(), tgt.data(), lp.data(), g.data(), dz.data(), M, V});
  DevBuf<float> gz(z), gg(g);
  DevBuf<int32_t> gt(tgt);
  DevBuf<double> glp(static_cast<size_t>(M));
  logits_grad({gz.p, gt.p, glp.p, gg.p, gz.p, M, V}, nullptr);
  const auto lpg = glp.down();
  for (int64_t m = 0; m < M; ++m) EXPECT_EQ(lpg[size_t(m)], lp[size_t(m)]) << m;  // base/portable_math.h
  EXPECT_LT(rel_l2(gz.down(), dz), 1e-6);
  // AdamW, sum of squares, axpy: the reference's arithmetic (built with --fmad=false).
  const int64_t n = 100003;
  auto p = rand_f32(size_t(n), -1, 1), gr = rand_f32(size_t(n), -1, 1), m1 = rand_f32(size_t(n), -0.1f, 0.1f),
       v1 = rand_f32(size_t(n), 0, 0.1f);
  DevBuf<float> gp(p), ggr(gr), gm(m1), gv(v1);
  R.adamw({p.data(), gr.data(), m1.data(), v1.data(), n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.7f, 0.5f, 0.4f});
  adamw({gp.p, ggr.p, gm.p, gv.p, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.7f, 0.5f, 0.4f}, nullptr);
  EXPECT_EQ(gp.down(), p);
  EXPECT_EQ(gm.down(), m1);
  EXPECT_EQ(gv.down(), v1);
  double ss = 0;
  R.sum_squares({gr.data(), n, &ss});
  DevBuf<double> gss(1);
  sum_squares({ggr.p, n, gss.p}, nullptr);
  EXPECT_EQ(gss.down()[0], ss);
}

// The indexer's KL (one block per row, double sums) and the backward of its logits (a warp per
// output row) against the reference: fp32 products summed in another order -> relative 1e-5.
TEST(CudaGrad, IndexerTraining) {
  // Two sequences of 40 and 25 rows; 8 heads of 128 dims (V3.2's index_head_dim).
  const int64_t S = 65, H = 8, D = 128, N = 40, ksel = 16;
  std::vector<int32_t> key_base(S), end(S);
  for (int64_t t = 0; t < S; ++t) key_base[t] = t < 40 ? 0 : 40, end[t] = int32_t(t - key_base[t] + 1);
  auto q8 = rand_fp8(size_t(S * H * D)), k8 = rand_fp8(size_t(S * D));
  std::vector<float> qs(static_cast<size_t>(S * H)), ks(static_cast<size_t>(S));
  for (size_t i = 0; i < qs.size(); ++i) qs[i] = std::ldexp(1.0f, -9 - int(i % 3));
  for (size_t i = 0; i < ks.size(); ++i) ks[i] = std::ldexp(1.0f, -8 - int(i % 2));
  auto w = rand_f32(size_t(S * H), -1, 1), dI = rand_f32(size_t(S * N), -1, 1);
  for (int64_t t = 0; t < S; ++t)
    for (int64_t s = end[t]; s < N; ++s) dI[size_t(t * N + s)] = 0.0f;
  std::vector<float> dw(static_cast<size_t>(S * H)), dq(static_cast<size_t>(S * H * D)), dk(static_cast<size_t>(S * D), 0.5f);
  const IndexerLogitsBwd rp{q8.data(), qs.data(), k8.data(), ks.data(), w.data(), key_base.data(), end.data(),
                            dI.data(), dw.data(), dq.data(), dk.data(), S, H, D, S, N};
  R.indexer_logits_bwd(rp);
  DevBuf<uint8_t> dq8(q8), dk8(k8);
  DevBuf<float> dqs(qs), dks(ks), dwv(w), ddI(dI), gdw(dw.size()), gdq(dq.size()), gdk(std::vector<float>(dk.size(), 0.5f));
  DevBuf<int32_t> dkb(key_base), dend(end);
  gdw.poison();
  gdq.poison();
  indexer_logits_bwd({dq8.p, dqs.p, dk8.p, dks.p, dwv.p, dkb.p, dend.p, ddI.p, gdw.p, gdq.p, gdk.p, S, H, D, S, N},
                     nullptr);
  EXPECT_LT(rel_l2(gdw.down(), dw), 1e-5);
  EXPECT_LT(rel_l2(gdq.down(), dq), 1e-5);
  EXPECT_LT(rel_l2(gdk.down(), dk), 1e-5);
  // KL over dense slots (idx[t, j] = j < end), P random, top-k = the first ksel visible keys.
  const int64_t K = N;
  std::vector<int32_t> idx(static_cast<size_t>(S * K), -1), sel(static_cast<size_t>(S * ksel), -1);
  for (int64_t t = 0; t < S; ++t) {
    for (int64_t j = 0; j < end[t]; ++j) idx[size_t(t * K + j)] = int32_t(j);
    for (int64_t j = 0; j < std::min<int64_t>(ksel, end[t]); ++j) sel[size_t(t * ksel + j)] = int32_t(2 * j % end[t]);
  }
  auto P = rand_f32(size_t(S * H * K), 0, 1), z = rand_f32(size_t(S * N), -3, 3);
  std::vector<double> loss(static_cast<size_t>(S)), rec(static_cast<size_t>(S));
  std::vector<float> ds(static_cast<size_t>(S * N));
  R.indexer_kl({P.data(), idx.data(), z.data(), sel.data(), loss.data(), rec.data(), ds.data(), S, H, K, N, ksel, 0.25f});
  DevBuf<float> dP(P), dz(z), gds(ds.size());
  DevBuf<int32_t> didx(idx), dsel(sel);
  DevBuf<double> gl(loss.size()), gr(rec.size());
  gds.poison();
  indexer_kl({dP.p, didx.p, dz.p, dsel.p, gl.p, gr.p, gds.p, S, H, K, N, ksel, 0.25f}, nullptr);
  const auto l2 = gl.down(), r2 = gr.down();
  for (int64_t t = 0; t < S; ++t) {
    EXPECT_NEAR(l2[t], loss[t], 1e-9 * std::max(1.0, loss[t])) << t;
    EXPECT_NEAR(r2[t], rec[t], 1e-9) << t;
  }
  EXPECT_LT(rel_l2(gds.down(), ds), 1e-6);
}

}  // namespace
}  // namespace dsa::ops::cuda::test
