// CUDA vs reference: act_quant, rms_norm, layer_norm, rope, hadamard, silu_mul, moe_gate.
#include "ops/cuda/tests/test_util.h"

namespace dsa::ops::cuda::test {
namespace {
const OpTable& R = ref_ops();

TEST(CudaElementwise, ActQuantExact) {  // exact: amax, pow2 scale and RNE fp8 are order-free
  for (auto [M, K] : {std::pair<int64_t, int64_t>{16, 7168}, {5, 300}, {1, 37}}) {
    auto x = rand_bf16(size_t(M * K), 3.0f);
    const int64_t nb = ceil_div(K, 128);
    std::vector<fp8> q(size_t(M * K));
    std::vector<float> s(size_t(M * nb));
    R.act_quant({x.data(), q.data(), s.data(), M, K});
    DevBuf<bf16> dx(x);
    DevBuf<fp8> dq(q.size());
    DevBuf<float> ds(s.size());
    dq.poison();
    ds.poison();
    act_quant({dx.p, dq.p, ds.p, M, K}, nullptr);
    EXPECT_EQ(dq.down(), q);
    EXPECT_EQ(ds.down(), s);
  }
}

TEST(CudaElementwise, RmsNorm) {
  // Sum of squares in fp32 (ref: double): rsqrt factor off by <= ~D*2^-24 relative, so the bf16
  // output may differ by 1 ulp where the exact value sits near a rounding boundary.
  for (bool res : {false, true})
    for (auto [M, D] : {std::pair<int64_t, int64_t>{4, 7168}, {3, 129}}) {
      auto x = rand_bf16(size_t(M * D)), r = rand_bf16(size_t(M * D));
      auto w = rand_f32(size_t(D), 0.5f, 1.5f);
      std::vector<bf16> y(x.size()), r_ref = r;
      R.rms_norm({x.data(), res ? r_ref.data() : nullptr, w.data(), y.data(), M, D, 1e-6f});
      DevBuf<bf16> dx(x), dr(r), dy(x.size());
      DevBuf<float> dw(w);
      dy.poison();
      rms_norm({dx.p, res ? dr.p : nullptr, dw.p, dy.p, M, D, 1e-6f}, nullptr);
      auto yo = dy.down();
      for (size_t i = 0; i < y.size(); ++i) ASSERT_TRUE(bf16_close_ulps(yo[i], y[i], 1)) << i;
      if (res) {
        auto ro = dr.down();
        for (size_t i = 0; i < r.size(); ++i) ASSERT_EQ(ro[i].bits, r_ref[i].bits) << i;  // exact
      }
    }
}

TEST(CudaElementwise, LayerNorm) {  // fp32 mean/var vs double: 1 bf16 ulp, as for rms_norm
  const int64_t M = 5, D = 128;
  auto x = rand_bf16(size_t(M * D), 2.0f);
  auto w = rand_f32(size_t(D), 0.5f, 1.5f), b = rand_f32(size_t(D), -0.5f, 0.5f);
  std::vector<bf16> y(x.size());
  R.layer_norm({x.data(), w.data(), b.data(), y.data(), M, D, 1e-6f});
  DevBuf<bf16> dx(x), dy(x.size());
  DevBuf<float> dw(w), db(b);
  dy.poison();
  layer_norm({dx.p, dw.p, db.p, dy.p, M, D, 1e-6f}, nullptr);
  auto yo = dy.down();
  for (size_t i = 0; i < y.size(); ++i) ASSERT_TRUE(bf16_close_ulps(yo[i], y[i], 1)) << i;
}

TEST(CudaElementwise, RopeBothLayoutsExact) {  // same fp32 ops, no FMA: bit-exact
  for (bool inter : {true, false}) {
    const int64_t M = 6, H = 3, rs = 200, off = 72, rd = 64, maxpos = 50;
    auto x = rand_bf16(size_t(M * H * rs));
    auto c = rand_f32(size_t(maxpos * rd / 2), -1, 1), s = rand_f32(size_t(maxpos * rd / 2), -1, 1);
    std::vector<int32_t> pos = {0, 3, 49, 7, 7, 20};
    auto xr = x;
    R.rope({xr.data(), pos.data(), c.data(), s.data(), M, H, rs, off, rd, inter});
    DevBuf<bf16> dx(x);
    DevBuf<int32_t> dp(pos);
    DevBuf<float> dc(c), ds(s);
    rope({dx.p, dp.p, dc.p, ds.p, M, H, rs, off, rd, inter}, nullptr);
    auto xo = dx.down();
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(xo[i].bits, xr[i].bits) << i;
  }
}

TEST(CudaElementwise, HadamardExact) {  // same butterfly order: bit-exact
  for (int64_t n : {128, 4, 1024}) {
    const int64_t M = 7;
    auto x = rand_bf16(size_t(M * n)), xr = x;
    R.hadamard({xr.data(), M, n});
    DevBuf<bf16> dx(x);
    hadamard({dx.p, M, n}, nullptr);
    auto xo = dx.down();
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(xo[i].bits, xr[i].bits) << i;
  }
}

TEST(CudaElementwise, SiluMul) {  // expf vs std::exp differ by <= 2 ulp fp32: 1 bf16 ulp
  const int64_t M = 9, N = 1001;
  auto g = rand_bf16(size_t(M * N), 3.0f), u = rand_bf16(size_t(M * N));
  std::vector<bf16> h(g.size());
  R.silu_mul({g.data(), u.data(), h.data(), M, N});
  DevBuf<bf16> dg(g), du(u), dh(g.size());
  dh.poison();
  silu_mul({dg.p, du.p, dh.p, M, N}, nullptr);
  auto ho = dh.down();
  for (size_t i = 0; i < h.size(); ++i) ASSERT_TRUE(bf16_close_ulps(ho[i], h[i], 1)) << i;
}

TEST(CudaElementwise, MoeGate) {
  // Experts exact (random logits: no near-ties); weights: expf vs std::exp, ~4 fp32 ulps.
  for (bool bias : {true, false}) {
    const int64_t T = 33, E = 256, G = 8, TG = 4, K = 8;
    auto lg = rand_f32(size_t(T * E), -4, 4), bs = rand_f32(size_t(E), -0.1f, 0.1f);
    std::vector<int32_t> ex(size_t(T * K));
    std::vector<float> w(size_t(T * K)), bi(size_t(T * E));
    MoeGate p{lg.data(), bias ? bs.data() : nullptr, ex.data(), w.data(), bi.data(), T, E, G, TG, K, true, 2.5f};
    R.moe_gate(p);
    DevBuf<float> dl(lg), db(bs), dw(w.size()), dbi(bi.size());
    DevBuf<int32_t> de(ex.size());
    dw.poison();
    de.poison();
    moe_gate({dl.p, bias ? db.p : nullptr, de.p, dw.p, dbi.p, T, E, G, TG, K, true, 2.5f}, nullptr);
    EXPECT_EQ(de.down(), ex);
    auto wo = dw.down(), bo = dbi.down();
    for (size_t i = 0; i < w.size(); ++i) ASSERT_NEAR(wo[i], w[i], 1e-6f * 2.5f) << i;
    for (size_t i = 0; i < bi.size(); ++i) ASSERT_NEAR(bo[i], bi[i], 1e-6f) << i;
  }
}

}  // namespace
}  // namespace dsa::ops::cuda::test
