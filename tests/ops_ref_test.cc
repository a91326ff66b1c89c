// Tests of the scalar reference ops (ops/ref) against double-precision computations, hand-worked
// examples and torch emulations (fixtures from tests/reference/gen_op_fixtures.py).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/numeric.h"
#include "ops/ops.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")  // the exact emulations below must not fuse multiply-adds
#endif

#include "test_util.h"

namespace dsa::ops {
namespace {

const OpTable& R = ref_ops();
constexpr double kBf16Rel = 1.0 / 256;        // 2^-8: bf16 RNE relative error is <= 2^-9
constexpr double kF32Eps = 1.0 / 16777216.0;  // 2^-24: fp32 unit roundoff
const float kNegInf = -std::numeric_limits<float>::infinity();

template <class T>
std::vector<T> load(const std::string& name, size_t count) {
  const std::string path = std::string(DSA_SOURCE_DIR) + "/tests/fixtures/ops/" + name + ".bin";
  std::vector<T> v(count);
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) {
    ADD_FAILURE() << "missing fixture " << path << " (run tests/reference/gen_op_fixtures.py)";
    return std::vector<T>(count);
  }
  const size_t got = std::fread(v.data(), sizeof(T), count, f);
  const bool at_end = std::fgetc(f) == EOF;
  std::fclose(f);
  EXPECT_EQ(got, count) << path;
  EXPECT_TRUE(at_end) << path << " is longer than expected";
  return v;
}

using test::Rng;

double f(bf16 v) {
  return bf16_to_f32(v);
}

// Cosine difference 1 - 2<x,y>/(|x|^2+|y|^2) (DeepGEMM's metric).
double cos_diff(const std::vector<double>& x, const std::vector<double>& y) {
  double xy = 0, xx = 0, yy = 0;
  for (size_t i = 0; i < x.size(); ++i) xy += x[i] * y[i], xx += x[i] * x[i], yy += y[i] * y[i];
  return xx + yy == 0 ? 0 : 1 - 2 * xy / (xx + yy);
}

// Quantise rows of random bf16 with the op under test (its exactness is tested separately).
void quantise(const std::vector<bf16>& x, int64_t M, int64_t K, std::vector<fp8>& q,
              std::vector<float>& s) {
  q.resize(size_t(M * K));
  s.resize(size_t(M * ceil_div(K, kBlock)));
  R.act_quant({x.data(), q.data(), s.data(), M, K});
}

TEST(OpsRef, TableIsComplete) {
  EXPECT_STREQ(R.name, "ref");
  EXPECT_TRUE(R.act_quant && R.fp8_gemm && R.linear_f32 && R.rms_norm && R.layer_norm && R.rope &&
              R.hadamard && R.indexer_logits && R.topk && R.sparse_mha_prefill &&
              R.sparse_mla_decode && R.head_matmul && R.moe_gate && R.silu_mul && R.grouped_fp8_gemm &&
              R.moe_route && R.moe_combine);
}

TEST(OpsRef, RejectsBadParameters) {
  std::vector<bf16> x(256);
  std::vector<fp8> q(256);
  std::vector<float> s(4);
  EXPECT_THROW(R.act_quant({x.data(), q.data(), s.data(), 0, 128}), Error);
  EXPECT_THROW(R.act_quant({x.data(), nullptr, s.data(), 1, 128}), Error);
  EXPECT_THROW(R.hadamard({x.data(), 2, 96}), Error);
  EXPECT_THROW(R.fp8_gemm({q.data(), s.data(), q.data(), s.data(), nullptr, 1, 1, 128, 1}), Error);
  std::vector<int32_t> end = {5}, idx(4);
  std::vector<float> sc(4);
  EXPECT_THROW(R.topk({sc.data(), end.data(), idx.data(), 1, 4, 4}), Error);  // end > N
}

// Page ids are checked up front (ref/checks.cc, shared with the cpu backend) for every page a row
// reads, also with one table shared by all rows whose later rows are longer than the first.
TEST(OpsRef, IndexerRejectsBadPageIdsOfASharedTable) {
  const int64_t ps = 4, D = 8, H = 1, N = 12;
  std::vector<uint8_t> pool(size_t(3 * ps * (D + 4)));
  std::vector<int32_t> bt = {0, 1, 7};  // page 2 of the table is invalid (3 pages)
  std::vector<fp8> q(size_t(2 * H * D));
  std::vector<float> w(size_t(2 * H), 1.0f), out(size_t(2 * N));
  std::vector<int32_t> end = {4, 12};   // row 0 reads page 0 only, row 1 all three
  for (const OpTable* t : {&ref_ops(), &cpu_ops()}) {
    const IndexPages kp{pool.data(), bt.data(), 0, ps, D, 3};
    EXPECT_THROW(t->indexer_logits({q.data(), w.data(), kp, end.data(), out.data(), 2, H, N}), Error) << t->name;
    end[1] = 8;  // pages 0 and 1 only: fine
    EXPECT_NO_THROW(t->indexer_logits({q.data(), w.data(), kp, end.data(), out.data(), 2, H, N})) << t->name;
    end[1] = 12;
  }
}

// ---------------------------------------------------------------- act_quant
TEST(ActQuant, MatchesTorchFixtureExactly) {
  const int64_t M = 8, K = 300, nb = 3;  // adversarial rows: tiny amax, zeros, 448*4, subnormals
  const auto x = load<bf16>("act_quant.x", size_t(M * K));
  const auto wq = load<fp8>("act_quant.q", size_t(M * K));
  const auto ws = load<float>("act_quant.s", size_t(M * nb));
  std::vector<fp8> q;
  std::vector<float> s;
  quantise(x, M, K, q, s);
  EXPECT_EQ(q, wq);
  EXPECT_EQ(s, ws);
}

TEST(ActQuant, DequantisedErrorWithinFp8Rounding) {
  Rng rng(1);
  for (int64_t K : {1, 127, 128, 129, 300}) {
    const int64_t M = 3, nb = ceil_div(K, kBlock);
    auto x = rng.bf16s(size_t(M * K), 2.0f);
    x[size_t(K - 1)] = f32_to_bf16(1e-6f);  // row 0 last block may be tiny (K == 1: amax < 1e-4)
    std::vector<fp8> q;
    std::vector<float> s;
    quantise(x, M, K, q, s);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k) {
        const double sc = s[size_t(m * nb + k / kBlock)];
        ASSERT_TRUE(is_power_of_two_float(float(sc)));
        const double xv = f(x[size_t(m * K + k)]), dq = fp8_to_f32(q[size_t(m * K + k)]) * sc;
        // e4m3: 3 mantissa bits -> relative error <= 2^-4; subnormal step 2^-9*s -> abs <= 2^-10*s.
        EXPECT_LE(std::fabs(dq - xv), std::max(std::fabs(xv) / 16, sc / 1024)) << K << " " << k;
      }
  }
}

// ---------------------------------------------------------------- fp8_gemm, linear_f32
TEST(Fp8Gemm, MatchesTorchEmulationExactly) {
  const int64_t M = 5, N = 200, K = 300;  // irregular N and K (partial blocks in both)
  const auto a = load<fp8>("fp8_gemm.a", size_t(M * K));
  const auto a_s = load<float>("fp8_gemm.a_s", size_t(M * 3));
  const auto w = load<fp8>("fp8_gemm.w", size_t(N * K));
  const auto w_s = load<float>("fp8_gemm.w_s", size_t(2 * 3));
  const auto want = load<bf16>("fp8_gemm.y", size_t(M * N));
  std::vector<bf16> y(size_t(M * N));
  R.fp8_gemm({a.data(), a_s.data(), w.data(), w_s.data(), y.data(), M, N, K, N});
  int bad = 0;
  for (size_t i = 0; i < y.size(); ++i) bad += y[i].bits != want[i].bits;
  EXPECT_EQ(bad, 0);
}

TEST(Fp8Gemm, CloseToDoubleDequantisedMatmul) {
  Rng rng(2);
  struct Case {
    int64_t M, N, K;
  };
  for (Case c : {Case{1, 1, 1}, Case{3, 130, 257}, Case{2, 300, 128}, Case{4, 129, 385}}) {
    const int64_t nb = ceil_div(c.K, kBlock), ldy = c.N + 3;
    std::vector<fp8> a, w(size_t(c.N * c.K));
    std::vector<float> a_s, w_s(size_t(ceil_div(c.N, kBlock) * nb));
    quantise(rng.bf16s(size_t(c.M * c.K)), c.M, c.K, a, a_s);
    for (auto& v : w) v = f32_to_fp8(rng.normal(8.0f));
    for (auto& v : w_s) v = std::ldexp(1.0f, rng.uni(-10, -4));
    std::vector<bf16> y(size_t(c.M * ldy), bf16{0x7fc0});
    R.fp8_gemm({a.data(), a_s.data(), w.data(), w_s.data(), y.data(), c.M, c.N, c.K, ldy});
    for (int64_t m = 0; m < c.M; ++m) {
      for (int64_t n = 0; n < c.N; ++n) {
        double ref = 0, mag = 0;
        for (int64_t k = 0; k < c.K; ++k) {
          const double t = double(fp8_to_f32(a[size_t(m * c.K + k)])) *
                           a_s[size_t(m * nb + k / 128)] * fp8_to_f32(w[size_t(n * c.K + k)]) *
                           w_s[size_t((n / 128) * nb + k / 128)];
          ref += t, mag += std::fabs(t);
        }
        // bf16 output: <= 2^-9 |y| (use 2^-8); fp32 accumulation (dots + block sum): <= K 2^-24 Σ|a
        // w|.
        const double tol = kBf16Rel * std::fabs(ref) + double(c.K + nb) * kF32Eps * mag;
        EXPECT_NEAR(f(y[size_t(m * ldy + n)]), ref, tol) << c.M << "x" << c.N << "x" << c.K;
      }
      for (int64_t n = c.N; n < ldy; ++n)
        EXPECT_EQ(y[size_t(m * ldy + n)].bits, 0x7fc0);  // untouched
    }
  }
}

TEST(LinearF32, CloseToDouble) {
  Rng rng(3);
  const int64_t M = 3, N = 37, K = 131;
  auto x = rng.floats(size_t(M * K));
  auto w = rng.bf16s(size_t(N * K));
  std::vector<float> y(size_t(M * N));
  R.linear_f32({x.data(), w.data(), y.data(), M, N, K});
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        ref += double(x[size_t(m * K + k)]) * f(w[size_t(n * K + k)]);
        mag += std::fabs(double(x[size_t(m * K + k)]) * f(w[size_t(n * K + k)]));
      }
      // fp32 (or better) accumulation: <= K 2^-24 Σ|x w|, plus the final fp32 rounding.
      EXPECT_NEAR(y[size_t(m * N + n)], ref, K * kF32Eps * mag + kF32Eps * std::fabs(ref));
    }
}

// ---------------------------------------------------------------- norms, silu_mul
TEST(RmsNorm, PlainAndFusedResidualCloseToDouble) {
  Rng rng(4);
  const int64_t M = 4, D = 300;
  const float eps = 1e-6f;
  auto x = rng.bf16s(size_t(M * D), 3.0f), res = rng.bf16s(size_t(M * D));
  auto w = rng.floats(size_t(D));
  for (bool fused : {false, true}) {
    auto r = res;
    std::vector<bf16> y(size_t(M * D));
    R.rms_norm({x.data(), fused ? r.data() : nullptr, w.data(), y.data(), M, D, eps});
    for (int64_t m = 0; m < M; ++m) {
      std::vector<double> v(static_cast<size_t>(D));
      double ss = 0;
      for (int64_t d = 0; d < D; ++d) {
        const size_t i = size_t(m * D + d);
        const float sum32 = float(f(x[i])) + float(f(res[i]));
        v[size_t(d)] = fused ? double(sum32) : f(x[i]);
        if (fused) {
          EXPECT_EQ(r[i].bits, f32_to_bf16(sum32).bits);  // residual <- bf16(fp32 sum)
        }
        ss += v[size_t(d)] * v[size_t(d)];
      }
      const double inv = 1 / std::sqrt(ss / D + eps);
      for (int64_t d = 0; d < D; ++d) {
        const double ref = w[size_t(d)] * v[size_t(d)] * inv;
        // bf16 out 2^-8 relative; fp32 rsqrt/products a few 2^-24 relative, absorbed by atol.
        EXPECT_NEAR(f(y[size_t(m * D + d)]), ref, kBf16Rel * std::fabs(ref) + 1e-6);
      }
    }
  }
  // y may alias x without a residual.
  auto xa = x;
  std::vector<bf16> y(size_t(M * D));
  R.rms_norm({x.data(), nullptr, w.data(), y.data(), M, D, eps});
  R.rms_norm({xa.data(), nullptr, w.data(), xa.data(), M, D, eps});
  for (size_t i = 0; i < y.size(); ++i) EXPECT_EQ(xa[i].bits, y[i].bits);
}

TEST(LayerNorm, CloseToDouble) {
  Rng rng(5);
  const int64_t M = 3, D = 128;
  auto x = rng.bf16s(size_t(M * D), 2.0f);
  for (int64_t d = 0; d < D; ++d)
    x[size_t(d)] = f32_to_bf16(50.0f + 0.01f * float(d));  // offset row
  auto w = rng.floats(size_t(D)), b = rng.floats(size_t(D));
  std::vector<bf16> y(size_t(M * D));
  R.layer_norm({x.data(), w.data(), b.data(), y.data(), M, D, 1e-6f});
  for (int64_t m = 0; m < M; ++m) {
    double mean = 0, var = 0;
    for (int64_t d = 0; d < D; ++d) mean += f(x[size_t(m * D + d)]) / D;
    for (int64_t d = 0; d < D; ++d) var += std::pow(f(x[size_t(m * D + d)]) - mean, 2) / D;
    for (int64_t d = 0; d < D; ++d) {
      const double n = (f(x[size_t(m * D + d)]) - mean) / std::sqrt(var + 1e-6);
      const double ref = n * w[size_t(d)] + b[size_t(d)];
      // bf16 out 2^-8 |ref|; fp32 terms |n w|, |b| each carry a few 2^-24 (x-mean is exact-ish).
      const double tol = kBf16Rel * std::fabs(ref) +
                         64 * kF32Eps * (std::fabs(n * w[size_t(d)]) + std::fabs(b[size_t(d)]) + 1);
      EXPECT_NEAR(f(y[size_t(m * D + d)]), ref, tol) << m << " " << d;
    }
  }
}

TEST(SiluMul, CloseToDouble) {
  Rng rng(6);
  const int64_t M = 2, N = 77;
  auto g = rng.bf16s(size_t(M * N), 4.0f), u = rng.bf16s(size_t(M * N));
  std::vector<bf16> h(size_t(M * N));
  R.silu_mul({g.data(), u.data(), h.data(), M, N});
  for (size_t i = 0; i < h.size(); ++i) {
    const double ref = f(g[i]) / (1 + std::exp(-f(g[i]))) * f(u[i]);
    EXPECT_NEAR(f(h[i]), ref, kBf16Rel * std::fabs(ref) + 1e-30);  // bf16 out; fp32 exp ~ulps
  }
}

// ---------------------------------------------------------------- rope, hadamard
TEST(Rope, BothLayoutsMatchExplicitRotation) {
  Rng rng(7);
  const int64_t M = 5, H = 3, stride = 40, off = 8, rd = 16, half = rd / 2, max_pos = 50;
  std::vector<float> cs(size_t(max_pos * half)), sn(size_t(max_pos * half));
  for (int64_t p = 0; p < max_pos; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const float ang = float(p) * std::pow(10000.0f, -2.0f * float(i) / float(rd));
      cs[size_t(p * half + i)] = std::cos(ang), sn[size_t(p * half + i)] = std::sin(ang);
    }
  std::vector<int32_t> pos = {0, 1, 7, 33, 49};
  const auto x0 = rng.bf16s(size_t(M * H * stride), 2.0f);
  for (bool il : {true, false}) {
    auto x = x0;
    R.rope({x.data(), pos.data(), cs.data(), sn.data(), M, H, stride, off, rd, il});
    for (int64_t m = 0; m < M; ++m)
      for (int64_t h = 0; h < H; ++h) {
        const size_t base = size_t((m * H + h) * stride);
        for (int64_t e = 0; e < stride; ++e)  // outside [off, off+rd) untouched
          if (e < off || e >= off + rd) {
            EXPECT_EQ(x[base + size_t(e)].bits, x0[base + size_t(e)].bits);
          }
        for (int64_t i = 0; i < half; ++i) {
          const size_t i0 = base + size_t(off + (il ? 2 * i : i)),
                       i1 = base + size_t(off + (il ? 2 * i + 1 : i + half));
          const double c = cs[size_t(pos[size_t(m)] * half + i)],
                       s = sn[size_t(pos[size_t(m)] * half + i)];
          const double a = f(x0[i0]), b = f(x0[i1]);
          const double r0 = a * c - b * s, r1 = a * s + b * c;
          // bf16 out 2^-8 relative; fp32 products/difference: 2^-23 (|a|+|b|) absolute.
          const double atol = 4 * kF32Eps * (std::fabs(a) + std::fabs(b));
          EXPECT_NEAR(f(x[i0]), r0, kBf16Rel * std::fabs(r0) + atol);
          EXPECT_NEAR(f(x[i1]), r1, kBf16Rel * std::fabs(r1) + atol);
          if (pos[size_t(m)] == 0) {
            EXPECT_EQ(x[i0].bits, x0[i0].bits);  // angle 0 is identity
          }
        }
      }
  }
}

TEST(Rope, MatchesTorchComplexFormulation) {
  const int64_t M = 7, H = 3, D = 64, max_pos = 100;
  const auto x0 = load<bf16>("rope.x", size_t(M * H * D));
  const auto pos = load<int32_t>("rope.pos", size_t(M));
  const auto cs = load<float>("rope.cos", size_t(max_pos * D / 2));
  const auto sn = load<float>("rope.sin", size_t(max_pos * D / 2));
  for (bool il : {true, false}) {
    const auto want = load<bf16>(il ? "rope.y_interleaved" : "rope.y_halfsplit", size_t(M * H * D));
    auto x = x0;
    R.rope({x.data(), pos.data(), cs.data(), sn.data(), M, H, D, 0, D, il});
    int exact = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      exact += x[i].bits == want[i].bits;
      // Same fp32 formula up to FMA/ordering in torch's complex mul: at most one bf16 ulp (2^-7
      // rel).
      EXPECT_NEAR(f(x[i]), f(want[i]), 2 * kBf16Rel * std::fabs(f(want[i])) + 1e-6) << i;
    }
    EXPECT_GE(exact, int(x.size() * 99 / 100)) << "interleaved=" << il;
  }
}

TEST(Hadamard, SylvesterOrderAndOrthonormal) {
  for (int64_t n : {1, 2, 8, 128}) {
    std::vector<bf16> e(size_t(n * n));
    for (int64_t i = 0; i < n; ++i) e[size_t(i * n + i)] = f32_to_bf16(1.0f);  // row i = unit e_i
    R.hadamard({e.data(), n, n});
    const float a = round_bf16(float(1 / std::sqrt(double(n))));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)  // H[j][i] = (-1)^popcount(i & j)
        ASSERT_EQ(f(e[size_t(i * n + j)]), (std::popcount(uint64_t(i & j)) % 2 ? -a : a)) << n;
    // Columns of H n^-0.5 in bf16 are orthogonal exactly and unit up to 2 * 2^-9 (entry rounding).
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < n; ++k) {
        double dot = 0;
        for (int64_t j = 0; j < n; ++j) dot += f(e[size_t(i * n + j)]) * f(e[size_t(k * n + j)]);
        EXPECT_NEAR(dot, i == k ? 1.0 : 0.0, kBf16Rel);
      }
  }
}

TEST(Hadamard, MatchesTorchAndIsInvolution) {
  const int64_t M = 6, n = 128;
  auto x = load<bf16>("hadamard.x", size_t(M * n));
  const auto want = load<bf16>("hadamard.y", size_t(M * n));
  const auto x0 = x;
  R.hadamard({x.data(), M, n});
  double mx = 0;
  for (auto v : want) mx = std::max(mx, std::fabs(f(v)));
  for (size_t i = 0; i < x.size(); ++i)  // fp32 butterflies vs exact: <= 1 bf16 ulp + 7*2^-24*Σ|x|
    EXPECT_NEAR(f(x[i]), f(want[i]), 2 * kBf16Rel * std::fabs(f(want[i])) + 1e-5 * mx) << i;
  R.hadamard({x.data(), M, n});  // H H = I: two bf16 roundings, each 2^-9 relative of max |x|
  double mx0 = 0;
  for (auto v : x0) mx0 = std::max(mx0, std::fabs(f(v)));
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(f(x[i]), f(x0[i]), 4 * kBf16Rel * mx0);
}

// ---------------------------------------------------------------- indexer logits, top-k
TEST(IndexerLogits, CloseToDoubleWithMaskedTailOverPages) {
  Rng rng(8);
  const int64_t S = 4, H = 5, D = 64, N = 23, ps = 4, npages = 9;  // 6 pages needed, 3 unused
  std::vector<fp8> q, kq;
  std::vector<float> qs, ks0;
  quantise(rng.bf16s(size_t(S * H * D)), S * H, D, q, qs);
  quantise(rng.bf16s(size_t(N * D)), N, D, kq, ks0);
  // Pages in shuffled order; unused pages hold NaN codes and NaN scales: must not be read.
  const int32_t order[6] = {7, 2, 5, 0, 8, 3};
  const int64_t pb = ps * (D + 4);
  std::vector<uint8_t> pool(size_t(npages * pb), 0x7f);
  for (int64_t s = 0; s < N; ++s) {
    uint8_t* base = pool.data() + order[s / ps] * pb;
    std::copy_n(kq.begin() + s * D, D, base + (s % ps) * D);
    std::memcpy(base + ps * D + 4 * (s % ps), &ks0[size_t(s)], 4);
  }
  // Row 1 uses its own table (a copy), the others share row 0's via stride; test both.
  std::vector<int32_t> bt(size_t(S * 6));
  for (int64_t r = 0; r < S; ++r) std::copy_n(order, 6, bt.begin() + r * 6);
  auto w = rng.floats(size_t(S * H));  // signed weights
  std::vector<int32_t> end = {0, 1, 17, int32_t(N)};
  for (int64_t stride : {int64_t(0), int64_t(6)}) {
    std::vector<float> out(size_t(S * N), 123.0f);
    R.indexer_logits({q.data(), w.data(), {pool.data(), bt.data(), stride, ps, D, npages}, end.data(), out.data(), S, H, N});
    for (int64_t t = 0; t < S; ++t)
      for (int64_t s = 0; s < N; ++s) {
        const float got = out[size_t(t * N + s)];
        if (s >= end[size_t(t)]) {
          EXPECT_EQ(got, kNegInf);
          continue;
        }
        double ref = 0, mag = 0;
        for (int64_t h = 0; h < H; ++h) {
          double dot = 0, dmag = 0;
          for (int64_t d = 0; d < D; ++d) {
            const double pr = double(fp8_to_f32(q[size_t((t * H + h) * D + d)])) *
                              fp8_to_f32(kq[size_t(s * D + d)]);
            dot += pr, dmag += std::fabs(pr);
          }
          ref += w[size_t(t * H + h)] * std::max(dot, 0.0);
          mag += std::fabs(w[size_t(t * H + h)]) * dmag;
        }
        // fp32 dot (D terms), weighted head sum (H terms), k_s product: (D + H + 2) 2^-24 Σ|w||q k|.
        const double tol = double(D + H + 2) * kF32Eps * mag * ks0[size_t(s)];
        EXPECT_NEAR(got, ref * ks0[size_t(s)], tol) << t << " " << s;
      }
  }
}

std::vector<std::set<int32_t>> run_topk(const std::vector<float>& sc,
                                        const std::vector<int32_t>& end, int64_t N, int64_t k) {
  const int64_t S = int64_t(end.size());
  std::vector<int32_t> idx(size_t(S * k), 7777);
  R.topk({sc.data(), end.data(), idx.data(), S, N, k});
  std::vector<std::set<int32_t>> sets(static_cast<size_t>(S));
  for (int64_t t = 0; t < S; ++t) {
    const int64_t want = std::min<int64_t>(k, end[size_t(t)]);
    for (int64_t j = 0; j < k; ++j) {
      const int32_t v = idx[size_t(t * k + j)];
      if (j < want) {
        EXPECT_TRUE(v >= 0 && v < end[size_t(t)]) << v;
        if (j > 0) {
          EXPECT_LT(idx[size_t(t * k + j - 1)], v);  // ascending, distinct
        }
        sets[size_t(t)].insert(v);
      } else {
        EXPECT_EQ(v, -1);
      }
    }
  }
  return sets;
}

TEST(TopK, SetsMatchSortAndPadding) {
  Rng rng(9);
  const int64_t N = 40;
  std::vector<int32_t> end = {40, 25, 3, 0, 1};
  auto sc = rng.floats(size_t(end.size() * N));
  for (int64_t k : {1, 5, 10, 40, 64}) {  // k > end for several rows; end == 0 -> all -1
    const auto sets = run_topk(sc, end, N, k);
    for (size_t t = 0; t < end.size(); ++t) {
      std::vector<int32_t> o(size_t(end[t]));
      for (int32_t i = 0; i < end[t]; ++i) o[size_t(i)] = i;
      std::sort(o.begin(), o.end(), [&](int32_t a, int32_t b) {
        return sc[t * N + size_t(a)] > sc[t * N + size_t(b)];
      });
      o.resize(size_t(std::min<int64_t>(k, end[t])));
      EXPECT_EQ(sets[t], std::set<int32_t>(o.begin(), o.end())) << "k=" << k << " t=" << t;
    }
  }
}

TEST(TopK, TiesAndMaskedScores) {
  const int64_t N = 12, k = 5;
  // Row 0: values {3, 2 x6, 1 ...}: 3 must be in, then any 4 of the 2s. Row 1: -inf beyond 4
  // finite.
  std::vector<float> sc = {1,     2,  2,       1,       3,       2,       2,       1,
                           2,     2,  1,       1,       0.5f,    kNegInf, 0.25f,   kNegInf,
                           0.75f, -1, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf};
  std::vector<int32_t> end = {12, 12};
  const auto sets = run_topk(sc, end, N, k);
  EXPECT_TRUE(sets[0].count(4));
  for (int32_t i : sets[0]) EXPECT_GE(sc[size_t(i)], 2.0f);
  EXPECT_EQ(sets[1].count(0) + sets[1].count(2) + sets[1].count(4) + sets[1].count(5),
            4u);                  // all finite
  EXPECT_EQ(sets[1].size(), 5u);  // plus one -inf key (a tie among masked keys)
}

TEST(TopK, SingleTokenSingleKey) {
  std::vector<float> sc = {kNegInf};
  const auto sets = run_topk(sc, {1}, 1, 4);
  EXPECT_EQ(sets[0], std::set<int32_t>({0}));
}

// ---------------------------------------------------------------- sparse attention, head matmul
// Dense softmax attention in double over all keys with the non-selected ones masked to -inf.
std::vector<double> dense_masked(const std::vector<double>& scores, const std::vector<bool>& keep,
                                 const std::vector<std::vector<double>>& vals) {
  double mx = -INFINITY, sum = 0;
  for (size_t t = 0; t < scores.size(); ++t)
    if (keep[t]) mx = std::max(mx, scores[t]);
  std::vector<double> o(vals.empty() ? 0 : vals[0].size(), 0.0), p(scores.size(), 0.0);
  for (size_t t = 0; t < scores.size(); ++t)
    if (keep[t]) sum += p[t] = std::exp(scores[t] - mx);
  for (size_t t = 0; t < scores.size(); ++t)
    for (size_t d = 0; d < o.size() && keep[t]; ++d) o[d] += p[t] / sum * vals[t][d];
  return o;
}

// Score error from two bf16 roundings of |s| <= ~4 is <= 2 * 2^-9 * 4 = 2^-6, i.e. <= 1.6% relative
// in p; p and o roundings add 2 * 2^-9. Relative error e in o gives cos diff ~ e^2/2 <= 2e-4.
constexpr double kAttnCosTol = 2e-4;

TEST(SparseMhaPrefill, MatchesDenseMaskedDouble) {
  Rng rng(10);
  const int64_t S = 5, T = 9, H = 3, dqk = 24, dv = 16, K = 6;
  const float scale = float(1 / std::sqrt(double(dqk)));
  auto q = rng.bf16s(size_t(S * H * dqk)), k = rng.bf16s(size_t(T * H * dqk)),
       v = rng.bf16s(size_t(T * H * dv));
  std::vector<int32_t> idx = {0, 1, 2, 3,  4,  5,  -1, -1, 8,  -1, 3,  -1, 7,  2,  -1,
                              5, 0, 6, -1, -1, -1, -1, -1, -1, 4,  -1, -1, -1, -1, -1};
  std::vector<bf16> o(size_t(S * H * dv), bf16{0x7fc0});
  R.sparse_mha_prefill(
      {q.data(), k.data(), v.data(), idx.data(), o.data(), S, T, H, dqk, dv, K, scale});
  for (int64_t s = 0; s < S; ++s) {
    std::vector<bool> keep(size_t(T), false);
    for (int64_t j = 0; j < K; ++j)
      if (idx[size_t(s * K + j)] >= 0) keep[size_t(idx[size_t(s * K + j)])] = true;
    std::vector<double> got, ref;
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> sc(static_cast<size_t>(T));
      std::vector<std::vector<double>> vals(static_cast<size_t>(T),
                                            std::vector<double>(size_t(dv)));
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t d = 0; d < dqk; ++d)
          sc[size_t(t)] +=
              f(q[size_t((s * H + h) * dqk + d)]) * f(k[size_t((t * H + h) * dqk + d)]);
        sc[size_t(t)] *= scale;
        for (int64_t d = 0; d < dv; ++d)
          vals[size_t(t)][size_t(d)] = f(v[size_t((t * H + h) * dv + d)]);
      }
      auto r = std::count(keep.begin(), keep.end(), true) ? dense_masked(sc, keep, vals)
                                                          : std::vector<double>(size_t(dv), 0.0);
      ref.insert(ref.end(), r.begin(), r.end());
      for (int64_t d = 0; d < dv; ++d) got.push_back(f(o[size_t((s * H + h) * dv + d)]));
    }
    EXPECT_LE(cos_diff(got, ref), kAttnCosTol) << "s=" << s;
    if (s == 3) {
      for (double g : got) EXPECT_EQ(g, 0.0);  // no selected key -> zero output
    }
    if (s == 4) {  // a single key: p = 1 exactly, o = v
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < dv; ++d)
          EXPECT_EQ(o[size_t((s * H + h) * dv + d)].bits, v[size_t((4 * H + h) * dv + d)].bits);
    }
  }
}

TEST(SparseMlaDecode, MatchesDenseMaskedDouble) {
  Rng rng(11);
  const int64_t S = 2, H = 4, N = 10, K = 7, L = 200, Rd = 16;  // kv_lora 200: partial scale block
  const LatentLayout lay{L, Rd};
  EXPECT_EQ((LatentLayout{512, 64}.row_bytes()), 656);
  std::vector<fp8> cq;
  std::vector<float> cs;
  quantise(rng.bf16s(size_t(N * L), 3.0f), N, L, cq, cs);
  const auto pe = rng.bf16s(size_t(N * Rd));
  std::vector<uint8_t> cache(size_t(N * lay.row_bytes()));
  std::vector<std::vector<double>> c(static_cast<size_t>(N), std::vector<double>(size_t(L)));
  for (int64_t t = 0; t < N; ++t) {
    uint8_t* row = cache.data() + t * lay.row_bytes();
    std::copy_n(cq.begin() + t * L, L, row);
    std::memcpy(row + lay.scale_off(), cs.data() + t * 2, 8);
    std::memcpy(row + lay.rope_off(), pe.data() + t * Rd, size_t(2 * Rd));
    for (int64_t i = 0; i < L; ++i)
      c[size_t(t)][size_t(i)] =
          double(fp8_to_f32(cq[size_t(t * L + i)])) * cs[size_t(t * 2 + i / 128)];
  }
  auto qa = rng.bf16s(size_t(S * H * L), 0.05f), qp = rng.bf16s(size_t(S * H * Rd), 0.3f);
  std::vector<int32_t> idx = {9, 0, 3, -1, 4, 5, 6, 2, -1, -1, -1, 8, 1, -1};
  std::vector<bf16> o(size_t(S * H * L));
  const float scale = 0.13523377886f;
  R.sparse_mla_decode(
      {qa.data(), qp.data(), cache.data(), idx.data(), o.data(), S, H, N, K, lay, scale});
  for (int64_t s = 0; s < S; ++s) {
    std::vector<bool> keep(size_t(N), false);
    for (int64_t j = 0; j < K; ++j)
      if (idx[size_t(s * K + j)] >= 0) keep[size_t(idx[size_t(s * K + j)])] = true;
    std::vector<double> got, ref;
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> sc(static_cast<size_t>(N));
      for (int64_t t = 0; t < N; ++t) {
        for (int64_t i = 0; i < L; ++i)
          sc[size_t(t)] += f(qa[size_t((s * H + h) * L + i)]) * c[size_t(t)][size_t(i)];
        for (int64_t i = 0; i < Rd; ++i)
          sc[size_t(t)] += f(qp[size_t((s * H + h) * Rd + i)]) * f(pe[size_t(t * Rd + i)]);
        sc[size_t(t)] *= scale;
      }
      auto r = dense_masked(sc, keep, c);
      ref.insert(ref.end(), r.begin(), r.end());
      for (int64_t i = 0; i < L; ++i) got.push_back(f(o[size_t((s * H + h) * L + i)]));
    }
    // Same bound as prefill plus the extra bf16 rounding of the two partial dots (2^-9 each).
    EXPECT_LE(cos_diff(got, ref), kAttnCosTol) << "s=" << s;
  }
}

TEST(HeadMatmul, BothLayoutsCloseToDoubleAndEqual) {
  Rng rng(12);
  const int64_t S = 3, H = 2, K = 70, N = 33, xs = H * K + 5, xh = K + 2, wrs_n = N + 3,
                wrs_t = K + 1;
  auto x = rng.bf16s(size_t(S * xs));
  auto w = rng.bf16s(size_t(H * K * wrs_n));    // [H][K][N] rows padded to wrs_n
  std::vector<bf16> wt(size_t(H * N * wrs_t));  // [H][N][K] rows padded to wrs_t
  for (int64_t h = 0; h < H; ++h)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = 0; n < N; ++n)
        wt[size_t(h * N * wrs_t + n * wrs_t + k)] = w[size_t(h * K * wrs_n + k * wrs_n + n)];
  std::vector<bf16> y(size_t(S * H * N)), yt(size_t(S * H * N));
  R.head_matmul({x.data(), w.data(), y.data(), S, H, K, N, xs, xh, K * wrs_n, wrs_n, false});
  R.head_matmul({x.data(), wt.data(), yt.data(), S, H, K, N, xs, xh, N * wrs_t, wrs_t, true});
  for (int64_t s = 0; s < S; ++s)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t n = 0; n < N; ++n) {
        double ref = 0, mag = 0;
        for (int64_t k = 0; k < K; ++k) {
          const double t =
              f(x[size_t(s * xs + h * xh + k)]) * f(w[size_t(h * K * wrs_n + k * wrs_n + n)]);
          ref += t, mag += std::fabs(t);
        }
        const size_t i = size_t((s * H + h) * N + n);
        // bf16 out 2^-8 relative; fp32 accumulation K 2^-24 Σ|x w|.
        EXPECT_NEAR(f(y[i]), ref, kBf16Rel * std::fabs(ref) + K * kF32Eps * mag);
        EXPECT_EQ(y[i].bits, yt[i].bits);  // same increasing-k fp32 order in both layouts
      }
}

// Dense fp32 emulation of the documented rounding points (keys visited in ascending order, the
// non-selected ones masked): bf16 scores, fp32 max/exp/sum, p = bf16(e / sum), o = bf16(Σ p v).
void emulate_attention(const std::vector<float>& score_bf16, const std::vector<bool>& keep,
                       const std::vector<const float*>& vals, int64_t dv, bf16* out) {
  float mx = -INFINITY, sum = 0.0f;
  for (size_t t = 0; t < keep.size(); ++t)
    if (keep[t]) mx = std::max(mx, score_bf16[t]);
  std::vector<float> e(keep.size(), 0.0f), acc(static_cast<size_t>(dv), 0.0f);
  for (size_t t = 0; t < keep.size(); ++t)
    if (keep[t]) sum += e[t] = std::exp(score_bf16[t] - mx);
  for (size_t t = 0; t < keep.size(); ++t) {
    if (!keep[t]) continue;
    const float p = round_bf16(e[t] / sum);
    for (int64_t d = 0; d < dv; ++d) acc[size_t(d)] += p * vals[t][d];
  }
  for (int64_t d = 0; d < dv; ++d) out[d] = f32_to_bf16(acc[size_t(d)]);
}

TEST(SparseAttention, PrefillAndDecodeMatchRoundingEmulationExactly) {
  Rng rng(13);
  const int64_t S = 3, T = 40, H = 2, dqk = 40, dv = 24, K = 16, L = 136, Rd = 8;
  std::vector<int32_t> idx(static_cast<size_t>(S * K), -1);
  for (int64_t s = 0; s < S; ++s) {  // ascending indices, as topk produces them, some -1 padding
    std::vector<int32_t> all(static_cast<size_t>(T));
    for (int32_t i = 0; i < T; ++i) all[size_t(i)] = i;
    std::shuffle(all.begin(), all.end(), rng.g);
    const int64_t n = K - s * 3;
    std::sort(all.begin(), all.begin() + n);
    std::copy_n(all.begin(), n, idx.begin() + s * K);
  }
  auto keep_of = [&](int64_t s) {
    std::vector<bool> keep(static_cast<size_t>(T), false);
    for (int64_t j = 0; j < K; ++j)
      if (idx[size_t(s * K + j)] >= 0) keep[size_t(idx[size_t(s * K + j)])] = true;
    return keep;
  };
  {  // MHA prefill
    auto q = rng.bf16s(size_t(S * H * dqk)), k = rng.bf16s(size_t(T * H * dqk)),
         v = rng.bf16s(size_t(T * H * dv));
    const float scale = 0.13523377886f;
    std::vector<bf16> o(size_t(S * H * dv)), want(size_t(S * H * dv));
    R.sparse_mha_prefill(
        {q.data(), k.data(), v.data(), idx.data(), o.data(), S, T, H, dqk, dv, K, scale});
    std::vector<float> vf(v.size());
    for (size_t i = 0; i < v.size(); ++i) vf[i] = bf16_to_f32(v[i]);
    for (int64_t s = 0; s < S; ++s)
      for (int64_t h = 0; h < H; ++h) {
        std::vector<float> sc(static_cast<size_t>(T));
        std::vector<const float*> vals(static_cast<size_t>(T));
        for (int64_t t = 0; t < T; ++t) {
          float dot = 0.0f;
          for (int64_t d = 0; d < dqk; ++d)
            dot += bf16_to_f32(q[size_t((s * H + h) * dqk + d)]) *
                   bf16_to_f32(k[size_t((t * H + h) * dqk + d)]);
          sc[size_t(t)] = round_bf16(round_bf16(dot) * scale);
          vals[size_t(t)] = vf.data() + (t * H + h) * dv;
        }
        emulate_attention(sc, keep_of(s), vals, dv, want.data() + (s * H + h) * dv);
      }
    for (size_t i = 0; i < o.size(); ++i) EXPECT_EQ(o[i].bits, want[i].bits) << i;
  }
  {  // absorbed MLA decode over latent rows
    const LatentLayout lay{L, Rd};
    std::vector<fp8> cq;
    std::vector<float> cs;
    quantise(rng.bf16s(size_t(T * L), 2.0f), T, L, cq, cs);
    const auto pe = rng.bf16s(size_t(T * Rd));
    std::vector<uint8_t> cache(size_t(T * lay.row_bytes()));
    std::vector<float> c(size_t(T * L));
    for (int64_t t = 0; t < T; ++t) {
      uint8_t* row = cache.data() + t * lay.row_bytes();
      std::copy_n(cq.begin() + t * L, L, row);
      std::memcpy(row + lay.scale_off(), cs.data() + t * 2, 8);
      std::memcpy(row + lay.rope_off(), pe.data() + t * Rd, size_t(2 * Rd));
      for (int64_t i = 0; i < L; ++i)
        c[size_t(t * L + i)] = fp8_to_f32(cq[size_t(t * L + i)]) * cs[size_t(t * 2 + i / 128)];
    }
    auto qa = rng.bf16s(size_t(S * H * L), 0.1f), qp = rng.bf16s(size_t(S * H * Rd));
    const float scale = 0.0721687836f;
    std::vector<bf16> o(size_t(S * H * L)), want(size_t(S * H * L));
    R.sparse_mla_decode(
        {qa.data(), qp.data(), cache.data(), idx.data(), o.data(), S, H, T, K, lay, scale});
    for (int64_t s = 0; s < S; ++s)
      for (int64_t h = 0; h < H; ++h) {
        std::vector<float> sc(static_cast<size_t>(T));
        std::vector<const float*> vals(static_cast<size_t>(T));
        for (int64_t t = 0; t < T; ++t) {
          float d1 = 0.0f, d2 = 0.0f;
          for (int64_t i = 0; i < L; ++i)
            d1 += bf16_to_f32(qa[size_t((s * H + h) * L + i)]) * c[size_t(t * L + i)];
          for (int64_t i = 0; i < Rd; ++i)
            d2 +=
                bf16_to_f32(qp[size_t((s * H + h) * Rd + i)]) * bf16_to_f32(pe[size_t(t * Rd + i)]);
          sc[size_t(t)] = round_bf16(round_bf16(round_bf16(d1) + round_bf16(d2)) * scale);
          vals[size_t(t)] = c.data() + t * L;
        }
        emulate_attention(sc, keep_of(s), vals, L, want.data() + (s * H + h) * L);
      }
    for (size_t i = 0; i < o.size(); ++i) EXPECT_EQ(o[i].bits, want[i].bits) << i;
  }
}

// ---------------------------------------------------------------- MoE gate
TEST(MoeGate, HandWorkedGroupTop2Example) {
  // logits 0 -> s = 0.5 exactly; b = 0.5 + bias (all exact in fp32).
  // b = [.625 .5 | .75 .25 | .5625 .5625 | .375 .875]; group top-2 sums 1.125, 1.0, 1.125, 1.25.
  // Keep 2 groups: g3 (1.25), then the 1.125 tie g0/g2 -> lower index g0. (By max, g1 would win.)
  // Top-2 of experts {0,1,6,7} by b: 7 (.875), 0 (.625). Weights .5/(.5+.5) * 2.5 = 1.25.
  std::vector<float> logits(8, 0.0f),
      bias = {0.125f, 0, 0.25f, -0.25f, 0.0625f, 0.0625f, -0.125f, 0.375f};
  std::vector<int32_t> ex(2);
  std::vector<float> wt(2), biased(8);
  R.moe_gate(
      {logits.data(), bias.data(), ex.data(), wt.data(), biased.data(), 1, 8, 4, 2, 2, true, 2.5f});
  EXPECT_EQ(ex, (std::vector<int32_t>{0, 7}));
  EXPECT_EQ(wt, (std::vector<float>{1.25f, 1.25f}));
  for (int e = 0; e < 8; ++e) EXPECT_EQ(biased[size_t(e)], 0.5f + bias[size_t(e)]);
  // Without bias the group score is the max: all s equal 0.5 -> ties everywhere -> lowest indices.
  R.moe_gate({logits.data(), nullptr, ex.data(), wt.data(), nullptr, 1, 8, 4, 2, 2, false, 1.0f});
  EXPECT_EQ(ex, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(wt, (std::vector<float>{0.5f, 0.5f}));  // unnormalised: s * route_scale
}

TEST(MoeGate, WeightsUseUnbiasedScores) {
  // A large bias makes expert 3 selected although its score is the smallest.
  std::vector<float> logits = {2.0f, 1.0f, 0.0f, -3.0f}, bias = {0, 0, 0, 10.0f};
  std::vector<int32_t> ex(2);
  std::vector<float> wt(2);
  R.moe_gate(
      {logits.data(), bias.data(), ex.data(), wt.data(), nullptr, 1, 4, 1, 1, 2, true, 1.0f});
  EXPECT_EQ(ex, (std::vector<int32_t>{0, 3}));
  const double s0 = 1 / (1 + std::exp(-2.0)), s3 = 1 / (1 + std::exp(3.0));
  EXPECT_NEAR(wt[0], s0 / (s0 + s3), 1e-6);  // fp32 sigmoid and division: a few 2^-24
  EXPECT_NEAR(wt[1], s3 / (s0 + s3), 1e-6);
}

TEST(MoeGate, MatchesTorchEmulation) {
  const int64_t T = 16, E = 64, topk = 6;
  const auto logits = load<float>("moe_gate.logits", size_t(T * E));
  const auto bias = load<float>("moe_gate.bias", size_t(E));
  const auto wex = load<int32_t>("moe_gate.experts", size_t(T * topk));
  const auto wwt = load<float>("moe_gate.weights", size_t(T * topk));
  std::vector<int32_t> ex(size_t(T * topk));
  std::vector<float> wt(size_t(T * topk));
  R.moe_gate(
      {logits.data(), bias.data(), ex.data(), wt.data(), nullptr, T, E, 8, 4, topk, true, 2.5f});
  EXPECT_EQ(ex, wex);
  // Sum of 6 fp32 terms in another order plus sigmoid ulps: <= 8 * 2^-24 relative.
  for (size_t i = 0; i < wt.size(); ++i)
    EXPECT_NEAR(wt[i], wwt[i], 8 * kF32Eps * std::fabs(wwt[i])) << i;
}

}  // namespace
}  // namespace dsa::ops
