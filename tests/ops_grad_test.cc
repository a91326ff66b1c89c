// Backward ops of the reference backend (ops/grad.h) against finite differences of the exact
// formula each one differentiates (written here in double, independently of ops/ref), and the
// linear ones (GEMM, RoPE, Hadamard, combine, scatter) against their adjoint identities.
#include <gtest/gtest.h>

#include <functional>
#include <numeric>

#include "ops/grad.h"
#include "test_util.h"

namespace dsa {
namespace {

using test::Rng;
const ops::OpTable& R = ops::ref_ops();
const ops::GradTable& G = *ops::ref_ops().grad;

// Central differences of f at x0 for coordinates idx; compares with grad (relative L2 over the
// sampled coordinates). h is relative to max(1, |x|). Returns the relative error.
double fd_rel_err(const std::function<double(const std::vector<double>&)>& f, std::vector<double> x0,
                  const std::vector<float>& grad, const std::vector<size_t>& idx, double h = 1e-5) {
  double num = 0.0, den = 0.0;
  for (size_t i : idx) {
    const double xi = x0[i], step = h * std::max(1.0, std::fabs(xi));
    x0[i] = xi + step;
    const double fp = f(x0);
    x0[i] = xi - step;
    const double fm = f(x0);
    x0[i] = xi;
    const double fd = (fp - fm) / (2 * step);
    num += (fd - grad[i]) * (fd - grad[i]);
    den += fd * fd;
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

std::vector<size_t> sample(size_t n, size_t k, Rng& rng) {
  std::vector<size_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  if (n <= k) return v;
  std::shuffle(v.begin(), v.end(), rng.g);
  v.resize(k);
  return v;
}

std::vector<double> widen(const std::vector<bf16>& v) {
  std::vector<double> d(v.size());
  for (size_t i = 0; i < v.size(); ++i) d[i] = bf16_to_f32(v[i]);
  return d;
}
std::vector<double> widen(const std::vector<float>& v) { return {v.begin(), v.end()}; }
double dotv(const std::vector<double>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Bound for every FD check of a smooth formula below: central differences at h = 1e-5 in double
// err ~1e-9 relative; the backward ops compute in double and round to fp32 (2^-24). 1e-6 leaves
// a wide margin while catching any wrong term (those are O(1) relative).
constexpr double kFdTol = 1e-6;

TEST(OpsGrad, GemmAllLayoutsMatchDoubleProduct) {
  Rng rng(1);
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (int trans_a = 0; trans_a < 2; ++trans_a)
        for (int trans_b = 0; trans_b < 2; ++trans_b) {
          const int64_t M = 5, N = 7, K = 9, batch = 2, lda = (trans_a ? M : K) + 3, ldb = (trans_b ? K : N) + 1;
          const int64_t sa = (trans_a ? K : M) * lda, sb = (trans_b ? N : K) * ldb, ldc = N + 2, sc = M * ldc;
          std::vector<float> af = rng.floats(size_t(batch * sa)), bfv = rng.floats(size_t(batch * sb));
          std::vector<bf16> ab(af.size()), bb(bfv.size());
          for (size_t i = 0; i < af.size(); ++i) ab[i] = f32_to_bf16(af[i]), af[i] = bf16_to_f32(ab[i]);
          for (size_t i = 0; i < bfv.size(); ++i) bb[i] = f32_to_bf16(bfv[i]), bfv[i] = bf16_to_f32(bb[i]);
          std::vector<float> c = rng.floats(size_t(batch * sc)), c0 = c;
          const bool acc = (ta + tb) % 2 == 1;
          G.gemm({ta ? (const void*)ab.data() : af.data(), tb ? (const void*)bb.data() : bfv.data(), c.data(),
                  ta ? ops::GemmType::BF16 : ops::GemmType::F32, tb ? ops::GemmType::BF16 : ops::GemmType::F32, M, N,
                  K, lda, ldb, ldc, bool(trans_a), bool(trans_b), acc, batch, sa, sb, sc});
          for (int64_t b = 0; b < batch; ++b)
            for (int64_t m = 0; m < M; ++m)
              for (int64_t n = 0; n < N; ++n) {
                double want = acc ? c0[b * sc + m * ldc + n] : 0.0;
                for (int64_t k = 0; k < K; ++k)
                  want += double(af[b * sa + (trans_a ? k * lda + m : m * lda + k)]) *
                          double(bfv[b * sb + (trans_b ? n * ldb + k : k * ldb + n)]);
                // fp32 result of a double sum: one rounding.
                EXPECT_NEAR(c[b * sc + m * ldc + n], want, std::fabs(want) * 6e-8 + 1e-12);
              }
          // Padding of C untouched.
          for (int64_t m = 0; m < M; ++m)
            for (int64_t n = N; n < ldc; ++n) EXPECT_EQ(c[m * ldc + n], c0[m * ldc + n]);
        }
}

// The cpu GEMM (fp32 FMA accumulation) against the reference (double): |c - ref| <= K * 2^-23 *
// Σ_k |a_k b_k| + the fp32 rounding of the accumulated value, per element (the error of a
// length-K fp32 dot product, gemma.cpp's matmul bound); shapes that leave partial row blocks and
// column tiles, every layout and type, batches and accumulation.
TEST(OpsGrad, CpuGemmMatchesReferenceWithinFp32Bound) {
  const ops::GradTable& C = *ops::cpu_ops().grad;
  Rng rng(21);
  for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {7, 70, 33}, {13, 129, 300}, {64, 16, 5}}) {
    for (int variant = 0; variant < 4; ++variant) {
      const bool trans_a = variant & 1, trans_b = variant & 2;
      const auto ta = variant == 1 ? ops::GemmType::BF16 : ops::GemmType::F32;
      const auto tb = variant >= 2 ? ops::GemmType::BF16 : ops::GemmType::F32;
      const int64_t batch = 2, lda = trans_a ? M : K, ldb = trans_b ? K : N, sa = M * K, sb = K * N, sc = M * N;
      std::vector<float> af = rng.floats(size_t(batch * sa)), bfv = rng.floats(size_t(batch * sb));
      std::vector<bf16> ab(af.size()), bb(bfv.size());
      for (size_t i = 0; i < af.size(); ++i) ab[i] = f32_to_bf16(af[i]), af[i] = bf16_to_f32(ab[i]);
      for (size_t i = 0; i < bfv.size(); ++i) bb[i] = f32_to_bf16(bfv[i]), bfv[i] = bf16_to_f32(bb[i]);
      const void* A = ta == ops::GemmType::BF16 ? (const void*)ab.data() : af.data();
      const void* B = tb == ops::GemmType::BF16 ? (const void*)bb.data() : bfv.data();
      std::vector<float> init = rng.floats(size_t(batch * sc)), c1 = init, c2 = init;
      const ops::Gemm g{A, B, c1.data(), ta, tb, M, N, K, lda, ldb, N, trans_a, trans_b, variant % 2 == 0, batch, sa, sb, sc};
      G.gemm(g);
      ops::Gemm g2 = g;
      g2.c = c2.data();
      C.gemm(g2);
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n) {
            double mag = g.accumulate ? std::fabs(init[b * sc + m * N + n]) : 0.0;
            for (int64_t k = 0; k < K; ++k)
              mag += std::fabs(double(af[b * sa + (trans_a ? k * lda + m : m * lda + k)]) *
                               double(bfv[b * sb + (trans_b ? n * ldb + k : k * ldb + n)]));
            const double bound = double(K + 1) * std::ldexp(1.0, -23) * mag + 1e-30;
            ASSERT_LE(std::fabs(double(c1[b * sc + m * N + n]) - c2[b * sc + m * N + n]), bound)
                << M << "x" << N << "x" << K << " variant " << variant;
          }
    }
  }
}

// The cpu table's row-parallel ops run the reference on row slices: bit-identical results; the
// norm weight gradients are summed per 32-row chunk first (fp32 reassociation: relative 2^-20).
TEST(OpsGrad, CpuRowOpsMatchReference) {
  const ops::GradTable& C = *ops::cpu_ops().grad;
  Rng rng(22);
  const int64_t M = 100, D = 96;
  auto x = rng.bf16s(size_t(M * D)), res = rng.bf16s(size_t(M * D));
  auto w = rng.floats(size_t(D)), b = rng.floats(size_t(D)), dy = rng.floats(size_t(M * D)), dres = rng.floats(size_t(M * D));
  std::vector<float> dx1(dy.size()), dx2(dy.size()), dw1(size_t(D), 0.25f), dw2 = dw1, db1(size_t(D), 0.0f), db2 = db1;
  G.rms_norm_bwd({x.data(), res.data(), w.data(), dy.data(), dres.data(), dx1.data(), dw1.data(), M, D, 1e-6f});
  C.rms_norm_bwd({x.data(), res.data(), w.data(), dy.data(), dres.data(), dx2.data(), dw2.data(), M, D, 1e-6f});
  EXPECT_EQ(dx1, dx2);
  for (int64_t d = 0; d < D; ++d) EXPECT_NEAR(dw1[d], dw2[d], 1e-5 * (1 + std::fabs(dw1[d])));
  std::fill(dw1.begin(), dw1.end(), 0.0f), std::fill(dw2.begin(), dw2.end(), 0.0f);
  G.layer_norm_bwd({x.data(), w.data(), dy.data(), dx1.data(), dw1.data(), db1.data(), M, D, 1e-6f});
  C.layer_norm_bwd({x.data(), w.data(), dy.data(), dx2.data(), dw2.data(), db2.data(), M, D, 1e-6f});
  EXPECT_EQ(dx1, dx2);
  for (int64_t d = 0; d < D; ++d) {
    EXPECT_NEAR(dw1[d], dw2[d], 1e-5 * (1 + std::fabs(dw1[d])));
    EXPECT_NEAR(db1[d], db2[d], 1e-5 * (1 + std::fabs(db1[d])));
  }
  const int64_t V = 300;
  auto z = rng.floats(size_t(M * V), 2.0f), g = rng.floats(size_t(M));
  std::vector<int32_t> tgt(static_cast<size_t>(M));
  for (auto& t : tgt) t = rng.uni(0, int(V) - 1);
  std::vector<float> dz1(z.size()), dz2(z.size());
  std::vector<double> lp1(static_cast<size_t>(M)), lp2(static_cast<size_t>(M));
  G.logits_grad({z.data(), tgt.data(), lp1.data(), g.data(), dz1.data(), M, V});
  C.logits_grad({z.data(), tgt.data(), lp2.data(), g.data(), dz2.data(), M, V});
  EXPECT_EQ(lp1, lp2);
  EXPECT_EQ(dz1, dz2);
  auto p = rng.floats(5000), gr = rng.floats(5000), m = rng.floats(5000), v = rng.floats(5000);
  for (auto& e : v) e = std::fabs(e);
  auto p2 = p, m2 = m, v2 = v;
  G.adamw({p.data(), gr.data(), m.data(), v.data(), 5000, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.7f, 0.5f, 0.4f});
  C.adamw({p2.data(), gr.data(), m2.data(), v2.data(), 5000, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.7f, 0.5f, 0.4f});
  EXPECT_EQ(p, p2);
  EXPECT_EQ(m, m2);
  EXPECT_EQ(v, v2);
  double s1 = 0, s2 = 0;
  auto big = rng.floats(100000);
  G.sum_squares({big.data(), int64_t(big.size()), &s1});
  C.sum_squares({big.data(), int64_t(big.size()), &s2});
  EXPECT_EQ(s1, s2);
}

TEST(OpsGrad, RmsNormBwdMatchesFiniteDifferences) {
  Rng rng(2);
  for (bool with_res : {false, true}) {
    const int64_t M = 3, D = 37;
    auto x = rng.bf16s(size_t(M * D)), res = rng.bf16s(size_t(M * D), 0.5f);
    auto w = rng.floats(size_t(D), 0.3f);
    for (auto& v : w) v += 1.0f;
    auto dy = rng.floats(size_t(M * D)), dres = rng.floats(size_t(M * D));
    std::vector<float> dx(size_t(M * D)), dw(size_t(D), 0.5f);
    G.rms_norm_bwd({x.data(), with_res ? res.data() : nullptr, w.data(), dy.data(), with_res ? dres.data() : nullptr,
                    dx.data(), dw.data(), M, D, 1e-6f});
    // L = Σ dy·y(r) + Σ dres·r, r = x (+ res).
    const auto r0 = widen(res);
    auto loss = [&](const std::vector<double>& xv, const std::vector<double>& wv) {
      double L = 0;
      for (int64_t m = 0; m < M; ++m) {
        double ss = 0;
        std::vector<double> r(static_cast<size_t>(D));
        for (int64_t d = 0; d < D; ++d) {
          r[d] = xv[m * D + d] + (with_res ? r0[m * D + d] : 0.0);
          ss += r[d] * r[d];
        }
        const double inv = 1 / std::sqrt(ss / D + 1e-6);
        for (int64_t d = 0; d < D; ++d)
          L += dy[m * D + d] * wv[d] * r[d] * inv + (with_res ? dres[m * D + d] * r[d] : 0.0);
      }
      return L;
    };
    const auto xd = widen(x), wd = widen(w);
    EXPECT_LT(fd_rel_err([&](const auto& v) { return loss(v, wd); }, xd, dx, sample(xd.size(), 60, rng)), kFdTol);
    std::vector<float> dw_only(dw);
    for (auto& v : dw_only) v -= 0.5f;  // dw accumulates onto its initial 0.5
    EXPECT_LT(fd_rel_err([&](const auto& v) { return loss(xd, v); }, wd, dw_only, sample(wd.size(), 37, rng)), 1e-5);
  }
}

TEST(OpsGrad, LayerNormBwdMatchesFiniteDifferences) {
  Rng rng(3);
  const int64_t M = 4, D = 128;
  auto x = rng.bf16s(size_t(M * D), 2.0f);
  auto w = rng.floats(size_t(D)), b = rng.floats(size_t(D));
  auto dy = rng.floats(size_t(M * D));
  std::vector<float> dx(size_t(M * D)), dw(size_t(D), 0.0f), db(size_t(D), 0.0f);
  G.layer_norm_bwd({x.data(), w.data(), dy.data(), dx.data(), dw.data(), db.data(), M, D, 1e-6f});
  auto loss = [&](const std::vector<double>& xv, const std::vector<double>& wv, const std::vector<double>& bv) {
    double L = 0;
    for (int64_t m = 0; m < M; ++m) {
      double mu = 0, var = 0;
      for (int64_t d = 0; d < D; ++d) mu += xv[m * D + d];
      mu /= D;
      for (int64_t d = 0; d < D; ++d) var += (xv[m * D + d] - mu) * (xv[m * D + d] - mu);
      const double inv = 1 / std::sqrt(var / D + 1e-6);
      for (int64_t d = 0; d < D; ++d) L += dy[m * D + d] * ((xv[m * D + d] - mu) * inv * wv[d] + bv[d]);
    }
    return L;
  };
  const auto xd = widen(x), wd = widen(w), bd = widen(b);
  EXPECT_LT(fd_rel_err([&](const auto& v) { return loss(v, wd, bd); }, xd, dx, sample(xd.size(), 80, rng)), kFdTol);
  EXPECT_LT(fd_rel_err([&](const auto& v) { return loss(xd, v, bd); }, wd, dw, sample(wd.size(), 40, rng)), kFdTol);
  EXPECT_LT(fd_rel_err([&](const auto& v) { return loss(xd, wd, v); }, bd, db, sample(bd.size(), 40, rng)), kFdTol);
}

TEST(OpsGrad, RopeBwdIsTheTransposeOfRope) {
  Rng rng(4);
  for (bool inter : {true, false}) {
    const int64_t M = 3, H = 2, stride = 100, off = 20, rd = 64, half = rd / 2;
    std::vector<float> cosv(size_t(10 * half)), sinv(size_t(10 * half));
    for (size_t i = 0; i < cosv.size(); ++i) {
      const double th = 0.37 * double(i);
      cosv[i] = float(std::cos(th)), sinv[i] = float(std::sin(th));
    }
    std::vector<int32_t> pos = {0, 7, 3};
    auto x = rng.floats(size_t(M * H * stride)), dy = rng.floats(size_t(M * H * stride));
    // y = R x in double (the forward's formula), <dy, R x> = <R^T dy, x>.
    std::vector<double> y(x.begin(), x.end());
    for (int64_t m = 0; m < M; ++m)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < half; ++i) {
          const int64_t base = (m * H + h) * stride + off;
          const int64_t a = inter ? base + 2 * i : base + i, b = inter ? base + 2 * i + 1 : base + i + half;
          const double c = cosv[pos[m] * half + i], s = sinv[pos[m] * half + i];
          y[a] = x[a] * c - x[b] * s;
          y[b] = x[a] * s + x[b] * c;
        }
    std::vector<float> dx = dy;
    G.rope_bwd({dx.data(), pos.data(), cosv.data(), sinv.data(), M, H, stride, off, rd, inter});
    double lhs = 0, rhs = 0;
    for (size_t i = 0; i < x.size(); ++i) lhs += double(dy[i]) * y[i], rhs += double(dx[i]) * x[i];
    EXPECT_NEAR(lhs, rhs, 1e-5 * std::fabs(lhs) + 1e-6);
  }
}

TEST(OpsGrad, HadamardIsOrthonormalAndSymmetric) {
  Rng rng(5);
  const int64_t M = 3, n = 128;
  auto x = rng.floats(size_t(M * n)), y = rng.floats(size_t(M * n));
  std::vector<float> hx = x, hy = y;
  G.hadamard_f32({hx.data(), M, n});
  G.hadamard_f32({hy.data(), M, n});
  double a = 0, b = 0;  // <Hx, y> = <x, Hy>
  for (size_t i = 0; i < x.size(); ++i) a += double(hx[i]) * y[i], b += double(x[i]) * hy[i];
  EXPECT_NEAR(a, b, 1e-5 * std::fabs(a) + 1e-6);
  G.hadamard_f32({hx.data(), M, n});  // H H = I
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(hx[i], x[i], 2e-6f * (1 + std::fabs(x[i])));
  // Same transform as the forward op (on bf16-exact data, up to the forward's bf16 output rounding).
  std::vector<bf16> xb(x.size());
  std::vector<float> xf(x.size());
  for (size_t i = 0; i < x.size(); ++i) xb[i] = f32_to_bf16(x[i]), xf[i] = bf16_to_f32(xb[i]);
  R.hadamard({xb.data(), M, n});
  G.hadamard_f32({xf.data(), M, n});
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(xb[i].bits, f32_to_bf16(xf[i]).bits) << i;
}

TEST(OpsGrad, SiluMulBwdMatchesFiniteDifferences) {
  Rng rng(6);
  const int64_t M = 3, N = 50;
  auto g = rng.bf16s(size_t(M * N), 2.0f), u = rng.bf16s(size_t(M * N));
  auto dh = rng.floats(size_t(M * N));
  std::vector<float> dg(size_t(M * N)), du(size_t(M * N));
  G.silu_mul_bwd({g.data(), u.data(), dh.data(), dg.data(), du.data(), M, N});
  const auto gd = widen(g), ud = widen(u);
  auto loss = [&](const std::vector<double>& gv, const std::vector<double>& uv) {
    double L = 0;
    for (size_t i = 0; i < gv.size(); ++i) L += dh[i] * gv[i] / (1 + std::exp(-gv[i])) * uv[i];
    return L;
  };
  EXPECT_LT(fd_rel_err([&](const auto& v) { return loss(v, ud); }, gd, dg, sample(gd.size(), 60, rng)), kFdTol);
  EXPECT_LT(fd_rel_err([&](const auto& v) { return loss(gd, v); }, ud, du, sample(ud.size(), 60, rng)), kFdTol);
}

TEST(OpsGrad, MoeGateBwdMatchesFiniteDifferences) {
  Rng rng(7);
  for (bool norm : {true, false}) {
    const int64_t T = 3, E = 12, k = 3;
    auto logits = rng.floats(size_t(T * E));
    std::vector<int32_t> experts = {0, 5, 11, 2, 3, 4, 1, 7, 9};
    auto dw = rng.floats(size_t(T * k)), ds = rng.floats(size_t(T * E));
    std::vector<float> dl(size_t(T * E));
    G.moe_gate_bwd({logits.data(), experts.data(), dw.data(), ds.data(), dl.data(), T, E, k, norm, 2.5f});
    auto loss = [&](const std::vector<double>& lv) {
      double L = 0;
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> s(static_cast<size_t>(E));
        for (int64_t e = 0; e < E; ++e) s[e] = 1 / (1 + std::exp(-lv[t * E + e])), L += ds[t * E + e] * s[e];
        double sum = 0;
        for (int64_t j = 0; j < k; ++j) sum += s[experts[t * k + j]];
        for (int64_t j = 0; j < k; ++j) L += dw[t * k + j] * 2.5 * s[experts[t * k + j]] / (norm ? sum : 1.0);
      }
      return L;
    };
    // The op's sigmoid is the forward's fp32 one (relative 2^-24 off the double one).
    EXPECT_LT(fd_rel_err(loss, widen(logits), dl, sample(size_t(T * E), 36, rng)), 1e-5);
  }
}

TEST(OpsGrad, MoeCombineBwdIsTheAdjoint) {
  Rng rng(8);
  const int64_t S = 4, k = 2, H = 16, R = 8;
  std::vector<int32_t> pos = {0, 3, 1, 2, 4, -1, 6, 7};  // row 5 unused, one empty choice
  auto y = rng.bf16s(size_t(R * H));
  auto w = rng.floats(size_t(R)), da = rng.floats(size_t(S * H));
  std::vector<float> dy(size_t(R * H), 9.0f), dw(size_t(R), 9.0f);
  G.moe_combine_bwd({da.data(), y.data(), pos.data(), w.data(), dy.data(), dw.data(), S, k, H, R});
  for (int64_t s = 0; s < S; ++s)
    for (int64_t j = 0; j < k; ++j) {
      const int32_t r = pos[s * k + j];
      if (r < 0) continue;
      double want_w = 0;
      for (int64_t h = 0; h < H; ++h) {
        EXPECT_FLOAT_EQ(dy[r * H + h], da[s * H + h] * w[r]);
        want_w += double(da[s * H + h]) * bf16_to_f32(y[r * H + h]);
      }
      EXPECT_NEAR(dw[r], want_w, 1e-5 * (1 + std::fabs(want_w)));
    }
  for (int64_t h = 0; h < H; ++h) EXPECT_EQ(dy[5 * H + h], 0.0f);
  EXPECT_EQ(dw[5], 0.0f);
}

TEST(OpsGrad, ScatterAddRowsSumsGroupsInOrder) {
  const int64_t H = 3;
  std::vector<float> src = {1, 2, 3, 10, 20, 30, 100, 200, 300};
  std::vector<float> dst(5 * H, 1.0f);
  std::vector<int32_t> dst_rows = {4, 0}, ptr = {0, 2, 3}, src_rows = {0, 2, 1};
  G.scatter_add_rows({dst.data(), src.data(), dst_rows.data(), ptr.data(), src_rows.data(), 2, H});
  EXPECT_EQ(dst[4 * H + 0], 102.0f);
  EXPECT_EQ(dst[4 * H + 2], 304.0f);
  EXPECT_EQ(dst[0], 11.0f);
  EXPECT_EQ(dst[1 * H], 1.0f);
}

TEST(OpsGrad, LogitsGradMatchesFiniteDifferencesAndLogSumExp) {
  Rng rng(9);
  const int64_t M = 3, V = 40;
  auto z = rng.floats(size_t(M * V), 3.0f);
  std::vector<int32_t> tgt = {5, 0, 39};
  std::vector<float> g = {1.0f, -0.5f, 2.0f}, dz(size_t(M * V));
  std::vector<double> lp(static_cast<size_t>(M));
  G.logits_grad({z.data(), tgt.data(), lp.data(), g.data(), dz.data(), M, V});
  auto logp = [&](const std::vector<double>& zv, int64_t m) {
    double mx = -1e300, s = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, zv[m * V + v]);
    for (int64_t v = 0; v < V; ++v) s += std::exp(zv[m * V + v] - mx);
    return zv[m * V + tgt[m]] - mx - std::log(s);
  };
  const auto zd = widen(z);
  for (int64_t m = 0; m < M; ++m) {
    EXPECT_NEAR(lp[m], logp(zd, m), 1e-12);
    EXPECT_EQ(lp[m], double(z[m * V + tgt[m]]) - log_sum_exp(z.data() + m * V, V));  // one definition
  }
  auto loss = [&](const std::vector<double>& zv) {
    double L = 0;
    for (int64_t m = 0; m < M; ++m) L += g[m] * logp(zv, m);
    return L;
  };
  EXPECT_LT(fd_rel_err(loss, zd, dz, sample(zd.size(), 120, rng)), kFdTol);
  // In place (dz aliases z) gives the same gradient.
  std::vector<float> zz = z;
  G.logits_grad({zz.data(), tgt.data(), nullptr, g.data(), zz.data(), M, V});
  EXPECT_EQ(zz, dz);
}

TEST(OpsGrad, AdamWStepMatchesTheFormula) {
  Rng rng(10);
  const int64_t n = 33;
  auto p = rng.floats(size_t(n)), g = rng.floats(size_t(n)), m = rng.floats(size_t(n), 0.1f);
  auto v = rng.floats(size_t(n), 0.1f);
  for (auto& x : v) x = std::fabs(x);
  auto p1 = p, m1 = m, v1 = v;
  const float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, gs = 0.5f, bc1 = 0.19f, bc2 = 0.0975f;
  G.adamw({p1.data(), g.data(), m1.data(), v1.data(), n, lr, b1, b2, eps, wd, gs, bc1, bc2});
  for (int64_t i = 0; i < n; ++i) {
    const double gg = double(g[i]) * gs, mm = b1 * double(m[i]) + (1 - b1) * gg, vv = b2 * double(v[i]) + (1 - b2) * gg * gg;
    const double want = p[i] - lr * ((mm / bc1) / (std::sqrt(vv / bc2) + eps) + wd * p[i]);
    EXPECT_NEAR(m1[i], mm, 1e-6);
    EXPECT_NEAR(v1[i], vv, 1e-6);
    EXPECT_NEAR(p1[i], want, 1e-5);
  }
}

TEST(OpsGrad, WeightQuantIsMakeModelsQuantiserAndDequantInverts) {
  Rng rng(11);
  const int64_t Rr = 130, C = 200;  // partial blocks in both dimensions
  auto x = rng.floats(size_t(Rr * C), 0.05f);
  x[3] = 0.9f;  // one large value in block (0, 0)
  std::vector<fp8> q(x.size());
  std::vector<float> s(size_t(ops::ceil_div(Rr, 128) * ops::ceil_div(C, 128)));
  G.weight_quant({x.data(), q.data(), s.data(), Rr, C});
  EXPECT_EQ(s[0], 0.9f / 448.0f);
  std::vector<float> back(x.size());
  std::vector<bf16> backb(x.size());
  G.dequant({q.data(), s.data(), back.data(), Rr, C, 128, false});
  G.dequant({q.data(), s.data(), backb.data(), Rr, C, 128, true});
  for (size_t i = 0; i < x.size(); ++i) {
    const int64_t r = int64_t(i) / C, c = int64_t(i) % C;
    const float sc = s[(r / 128) * 2 + c / 128];
    // e4m3: 3 mantissa bits (half-ulp 2^-4 relative) above 2^-6, absolute 2^-10 below, times the scale.
    EXPECT_LE(std::fabs(back[i] - x[i]), std::max(std::fabs(x[i]) / 16.0f, sc / 1024.0f) * 1.0001f);
    EXPECT_EQ(backb[i].bits, f32_to_bf16(back[i]).bits);
  }
  // Activation scales (block_rows 1): act_quant's output dequantises to bf16-exact values.
  const int64_t M = 3, K = 200;
  auto a = rng.bf16s(size_t(M * K));
  std::vector<fp8> aq(a.size());
  std::vector<float> as(size_t(M * 2)), ad(a.size());
  R.act_quant({a.data(), aq.data(), as.data(), M, K});
  G.dequant({aq.data(), as.data(), ad.data(), M, K, 1, false});
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(ad[i], round_bf16(ad[i]));
}

TEST(OpsGrad, SumSquaresAndAxpy) {
  Rng rng(12);
  auto x = rng.floats(10000);
  double out = 0, want = 0;
  for (float v : x) want += double(v) * v;
  G.sum_squares({x.data(), int64_t(x.size()), &out});
  EXPECT_NEAR(out, want, 1e-9 * want);
  std::vector<float> y(x.size(), 1.0f);
  G.axpy({y.data(), x.data(), -2.0f, int64_t(x.size())});
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(y[i], 1.0f + -2.0f * x[i]);
}

// The absorbed attention backward against finite differences of the smooth attention
// (score = scale (qa·c + qp·pe), p = softmax, o = Σ p c), taken at the cache's values. The op
// evaluates the gradient at the forward's bf16-rounded probabilities and scores, which moves it
// by ~|score|·2^-9 + 2^-9 relative; the bound 2^-5 covers that with margin (a wrong term is O(1)).
TEST(OpsGrad, SparseMlaBwdMatchesFiniteDifferences) {
  Rng rng(13);
  const int64_t S = 3, H = 2, L = 160, Rp = 64, K = 5, N = 9;  // partial 128-block in the latent
  const ops::LatentLayout lay{L, Rp};
  const int64_t rb = lay.row_bytes(), nb = ops::ceil_div(L, 128);
  std::vector<uint8_t> cache(size_t(N * rb));
  std::vector<double> c0(size_t(N * L)), pe0(size_t(N * Rp));
  for (int64_t r = 0; r < N; ++r) {
    auto codes = rng.fp8s(size_t(L));
    for (int64_t b = 0; b < nb; ++b) {
      const float sc = std::ldexp(1.0f, rng.uni(-9, -7));
      std::memcpy(cache.data() + r * rb + lay.scale_off() + 4 * b, &sc, 4);
      for (int64_t i = b * 128; i < std::min(L, (b + 1) * 128); ++i) {
        cache[r * rb + i] = codes[i];
        c0[r * L + i] = kFp8Table[codes[i]] * sc;
      }
    }
    auto pe = rng.bf16s(size_t(Rp), 0.5f);
    std::memcpy(cache.data() + r * rb + lay.rope_off(), pe.data(), size_t(Rp) * 2);
    for (int64_t i = 0; i < Rp; ++i) pe0[r * Rp + i] = bf16_to_f32(pe[i]);
  }
  // Query 0 sees rows {0,2,4,6}, query 1 {1,2,3}, query 2 {0,1,2,3,8}; -1 pads.
  std::vector<int32_t> idx = {0, 2, -1, 4, 6, 1, 2, 3, -1, -1, 0, 1, 2, 3, 8};
  auto qa = rng.bf16s(size_t(S * H * L), 0.5f), qp = rng.bf16s(size_t(S * H * Rp), 0.5f);
  auto d_o = rng.floats(size_t(S * H * L));
  const float scale = 0.1352f;
  std::vector<float> dqa(qa.size()), dqp(qp.size()), P(size_t(S * H * K)), Gs(size_t(S * H * K));
  G.sparse_mla_bwd_q({qa.data(), qp.data(), cache.data(), idx.data(), d_o.data(), dqa.data(), dqp.data(), P.data(),
                      Gs.data(), S, H, N, K, lay, scale});
  // Inverse index: keys = distinct rows in ascending order, slots ascending.
  std::vector<int32_t> key_rows, ptr = {0}, list;
  for (int32_t r = 0; r < N; ++r) {
    bool any = false;
    for (int64_t e = 0; e < S * K; ++e)
      if (idx[e] == r) list.push_back(int32_t(e)), any = true;
    if (any) key_rows.push_back(r), ptr.push_back(int32_t(list.size()));
  }
  const int64_t nk = int64_t(key_rows.size());
  std::vector<float> dkv(size_t(nk * (L + Rp)));
  G.sparse_mla_bwd_kv({qa.data(), qp.data(), d_o.data(), P.data(), Gs.data(), ptr.data(), list.data(), dkv.data(), nk,
                       S, H, K, L, Rp});
  // Smooth loss Σ d_o · o(qa, qp, c, pe).
  auto loss = [&](const std::vector<double>& qav, const std::vector<double>& qpv, const std::vector<double>& cv,
                  const std::vector<double>& pev) {
    double Ls = 0;
    for (int64_t s = 0; s < S; ++s)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t sh = s * H + h;
        std::vector<double> sc;
        std::vector<int32_t> rows;
        for (int64_t j = 0; j < K; ++j) {
          const int32_t r = idx[s * K + j];
          if (r < 0) continue;
          double a = 0;
          for (int64_t i = 0; i < L; ++i) a += qav[sh * L + i] * cv[r * L + i];
          for (int64_t i = 0; i < Rp; ++i) a += qpv[sh * Rp + i] * pev[r * Rp + i];
          sc.push_back(scale * a);
          rows.push_back(r);
        }
        double mx = *std::max_element(sc.begin(), sc.end()), z = 0;
        for (auto& v : sc) z += v = std::exp(v - mx);
        for (size_t j = 0; j < sc.size(); ++j)
          for (int64_t i = 0; i < L; ++i) Ls += d_o[sh * L + i] * sc[j] / z * cv[rows[j] * L + i];
      }
    return Ls;
  };
  const auto qad = widen(qa), qpd = widen(qp);
  constexpr double kTol = 1.0 / 32;
  EXPECT_LT(fd_rel_err([&](const auto& v) { return loss(v, qpd, c0, pe0); }, qad, dqa, sample(qad.size(), 80, rng)), kTol);
  EXPECT_LT(fd_rel_err([&](const auto& v) { return loss(qad, v, c0, pe0); }, qpd, dqp, sample(qpd.size(), 60, rng)), kTol);
  // Key gradients: expand d_kv to full rows (unselected rows get 0, which FD confirms).
  std::vector<float> dc(c0.size(), 0.0f), dpe(pe0.size(), 0.0f);
  for (int64_t k = 0; k < nk; ++k) {
    for (int64_t i = 0; i < L; ++i) dc[key_rows[k] * L + i] = dkv[k * (L + Rp) + i];
    for (int64_t i = 0; i < Rp; ++i) dpe[key_rows[k] * Rp + i] = dkv[k * (L + Rp) + L + i];
  }
  EXPECT_LT(fd_rel_err([&](const auto& v) { return loss(qad, qpd, v, pe0); }, c0, dc, sample(c0.size(), 120, rng)), kTol);
  EXPECT_LT(fd_rel_err([&](const auto& v) { return loss(qad, qpd, c0, v); }, pe0, dpe, sample(pe0.size(), 80, rng)), kTol);
  for (int64_t i = 0; i < L; ++i) EXPECT_EQ(dc[5 * L + i], 0.0f);  // row 5 never selected
}

TEST(OpsGrad, IndexerKlMatchesItsFormulaAndFiniteDifferences) {
  Rng rng(21);
  const int64_t S = 3, H = 2, K = 4, N = 6;
  // Slots -> key positions; -1 pads. Row 1 has a zero-probability slot (0 log 0 = 0).
  const std::vector<int32_t> idx = {0, 2, 3, -1, 1, 4, -1, 5, 0, 1, 2, 3};
  std::vector<float> P(static_cast<size_t>(S * H * K));
  for (auto& v : P) v = float(rng.uni(1, 100)) / 64.0f;
  for (int64_t h = 0; h < H; ++h) P[size_t((1 * H + h) * K + 1)] = 0.0f;
  auto scores = rng.floats(size_t(S * N), 2.0f);
  const std::vector<int32_t> sel = {2, 3, -1, 4, 5, 1};  // ksel = 2
  std::vector<double> loss(static_cast<size_t>(S)), rec(static_cast<size_t>(S));
  std::vector<float> ds(static_cast<size_t>(S * N), 7.0f);
  const float coef = 0.75f;
  G.indexer_kl({P.data(), idx.data(), scores.data(), sel.data(), loss.data(), rec.data(), ds.data(), S, H, K, N, 2, coef});
  auto kl = [&](int64_t t, const std::vector<double>& z) {
    double tot = 0, mx = -1e300;
    for (int64_t j = 0; j < K; ++j)
      if (idx[t * K + j] >= 0) {
        for (int64_t h = 0; h < H; ++h) tot += P[size_t((t * H + h) * K + j)];
        mx = std::max(mx, z[size_t(t * N + idx[t * K + j])]);
      }
    double se = 0;
    for (int64_t j = 0; j < K; ++j)
      if (idx[t * K + j] >= 0) se += std::exp(z[size_t(t * N + idx[t * K + j])] - mx);
    double L = 0;
    for (int64_t j = 0; j < K; ++j) {
      if (idx[t * K + j] < 0) continue;
      double p = 0;
      for (int64_t h = 0; h < H; ++h) p += P[size_t((t * H + h) * K + j)] / tot;
      if (p > 0) L += p * (std::log(p) - (z[size_t(t * N + idx[t * K + j])] - mx - std::log(se)));
    }
    return L;
  };
  const auto z0 = widen(scores);
  for (int64_t t = 0; t < S; ++t) EXPECT_NEAR(loss[size_t(t)], kl(t, z0), 1e-12) << t;
  // Recall: row 0 keeps positions {2,3} = slots 1,2; row 1 {4} (slot 1, p = 0) ; row 2 {1} = slot 1.
  auto p_of = [&](int64_t t, int64_t j) {
    double tot = 0, pj = 0;
    for (int64_t jj = 0; jj < K; ++jj)
      if (idx[t * K + jj] >= 0)
        for (int64_t h = 0; h < H; ++h) tot += P[size_t((t * H + h) * K + jj)];
    for (int64_t h = 0; h < H; ++h) pj += P[size_t((t * H + h) * K + j)];
    return pj / tot;
  };
  EXPECT_NEAR(rec[0], p_of(0, 1) + p_of(0, 2), 1e-12);
  EXPECT_EQ(rec[1], 0.0);
  EXPECT_NEAR(rec[2], p_of(2, 1), 1e-12);
  // d_scores: coef · ∂KL/∂z, 0 at keys outside the slots (written over the 7s).
  std::vector<float> g(ds.size());
  for (size_t i = 0; i < g.size(); ++i) g[i] = ds[i] / coef;
  auto total = [&](const std::vector<double>& z) {
    double L = 0;
    for (int64_t t = 0; t < S; ++t) L += kl(t, z);
    return L;
  };
  std::vector<size_t> all(g.size());
  std::iota(all.begin(), all.end(), 0);
  EXPECT_LT(fd_rel_err(total, z0, g, all), kFdTol);
  EXPECT_EQ(ds[size_t(0 * N + 1)], 0.0f);
  EXPECT_EQ(ds[size_t(1 * N + 0)], 0.0f);
}

TEST(OpsGrad, IndexerLogitsBwdMatchesTheForwardsFormula) {
  Rng rng(22);
  // Two sequences: rows 0..2 (positions 0..2) and rows 3..4 (positions 0..1).
  const int64_t S = 5, H = 3, D = 32, N = 3, ps = 4;
  const std::vector<int32_t> key_base = {0, 0, 0, 3, 3}, end = {1, 2, 3, 1, 2}, bt = {0, 0, 0, 1, 1};
  auto q8 = rng.fp8s(size_t(S * H * D)), k8 = rng.fp8s(size_t(S * D));
  const auto qs = rng.pow2s(size_t(S * H), -8, -5), ks = rng.pow2s(size_t(S), -8, -5);
  auto w = rng.floats(size_t(S * H));
  // The forward op over a two-page pool (page b holds sequence b's keys).
  std::vector<uint8_t> pool(static_cast<size_t>(2 * ps * (D + 4)), 0);
  for (int64_t r = 0; r < S; ++r) {
    const int64_t page = bt[size_t(r)], slot = r - key_base[size_t(r)];
    uint8_t* base = pool.data() + page * ps * (D + 4);
    std::memcpy(base + slot * D, k8.data() + r * D, size_t(D));
    std::memcpy(base + ps * D + 4 * slot, &ks[size_t(r)], 4);
  }
  std::vector<float> wf(w.size());
  for (int64_t t = 0; t < S; ++t)
    for (int64_t h = 0; h < H; ++h)
      wf[size_t(t * H + h)] = w[size_t(t * H + h)] * float(std::pow(double(H), -0.5)) * qs[size_t(t * H + h)] *
                              float(std::pow(double(D), -0.5));
  std::vector<float> out(static_cast<size_t>(S * N));
  R.indexer_logits({q8.data(), wf.data(), {pool.data(), bt.data(), 1, ps, D, 2}, end.data(), out.data(), S, H, N});
  std::vector<double> q0(static_cast<size_t>(S * H * D)), k0(static_cast<size_t>(S * D)), w0 = widen(w);
  for (int64_t i = 0; i < S * H * D; ++i) q0[size_t(i)] = double(kFp8Table[q8[size_t(i)]]) * qs[size_t(i / D)];
  for (int64_t i = 0; i < S * D; ++i) k0[size_t(i)] = double(kFp8Table[k8[size_t(i)]]) * ks[size_t(i / D)];
  const double c = 1.0 / std::sqrt(double(H * D));
  auto logit = [&](const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& wv, int64_t t,
                   int64_t s) {
    double a = 0;
    for (int64_t h = 0; h < H; ++h) {
      double dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += q[size_t((t * H + h) * D + d)] * k[size_t((key_base[size_t(t)] + s) * D + d)];
      a += c * wv[size_t(t * H + h)] * std::max(dot, 0.0);
    }
    return a;
  };
  // The backward's formula is the forward op's (fp32 rounding apart).
  for (int64_t t = 0; t < S; ++t)
    for (int64_t s = 0; s < end[size_t(t)]; ++s) {
      const double ref = logit(q0, k0, w0, t, s);
      EXPECT_NEAR(out[size_t(t * N + s)], ref, 1e-5 * std::max(1.0, std::fabs(ref))) << t << "," << s;
    }
  auto dI = rng.floats(size_t(S * N));
  std::vector<float> dw(static_cast<size_t>(S * H)), dq(static_cast<size_t>(S * H * D)), dk(static_cast<size_t>(S * D), 0.0f);
  G.indexer_logits_bwd({q8.data(), qs.data(), k8.data(), ks.data(), w.data(), key_base.data(), end.data(), dI.data(),
                        dw.data(), dq.data(), dk.data(), S, H, D, S, N});
  auto f = [&](const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& wv) {
    double L = 0;
    for (int64_t t = 0; t < S; ++t)
      for (int64_t s = 0; s < end[size_t(t)]; ++s) L += dI[size_t(t * N + s)] * logit(q, k, wv, t, s);
    return L;
  };
  EXPECT_LT(fd_rel_err([&](const auto& v) { return f(v, k0, w0); }, q0, dq, sample(q0.size(), 100, rng), 1e-7), 1e-5);
  EXPECT_LT(fd_rel_err([&](const auto& v) { return f(q0, v, w0); }, k0, dk, sample(k0.size(), 100, rng), 1e-7), 1e-5);
  EXPECT_LT(fd_rel_err([&](const auto& v) { return f(q0, k0, v); }, w0, dw, sample(w0.size(), 15, rng)), kFdTol);
}

}  // namespace
}  // namespace dsa
