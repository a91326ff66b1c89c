// Tests of the optimised CPU ops (ops/cpu) against the scalar reference (ops/ref) on irregular
// shapes, on every SIMD target this machine runs, plus thread-count independence.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "base/numeric.h"
#include "base/thread_pool.h"
#include "hwy/targets.h"
#include "ops/ops.h"

#include "test_util.h"

namespace dsa::ops {
namespace {

const OpTable& R = ref_ops();
const OpTable& C = cpu_ops();
constexpr double kU = 1.0 / 16777216.0;  // 2^-24: fp32 unit roundoff
constexpr double kBf16 = 1.0 / 256;      // 2^-8: two bf16 RNE roundings (2^-9 each) of nearby values
const float kNegInf = -std::numeric_limits<float>::infinity();

using test::Rng;

float f(bf16 v) { return bf16_to_f32(v); }
bool same_bits(const std::vector<bf16>& a, const std::vector<bf16>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 2) == 0;
}
template <class T>
bool same_bytes(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// Runs fn once per SIMD target compiled in and supported here (AVX-512, AVX2, SSE4, scalar).
void for_each_target(const std::function<void()>& fn) {
  int runs = 0;
  hwy::SetSupportedTargetsForTest(0);
  const int64_t supported = hwy::SupportedTargets();
  for (int64_t t : {int64_t(HWY_AVX3), int64_t(HWY_AVX2), int64_t(HWY_SSE4), int64_t(HWY_SCALAR)}) {
    if ((supported & t) == 0) continue;
    hwy::SetSupportedTargetsForTest(t);
    SCOPED_TRACE(hwy::TargetName(t));
    fn();
    ++runs;
  }
  hwy::SetSupportedTargetsForTest(0);
  EXPECT_GE(runs, 2);
}

// The AVX-512 targets may take the vdpbf16ps kernels (same products, other summation order).
bool bf16_path_possible() { return (hwy::SupportedTargets() & (HWY_AVX3 | HWY_AVX3_DL)) != 0; }

// ---- act_quant: elementwise per block, so exact equality (q bytes and scales).
void check_act_quant(const std::vector<bf16>& x, int64_t M, int64_t K) {
  const int64_t nb = ceil_div(K, kBlock);
  std::vector<fp8> q1(size_t(M * K)), q2(q1.size());
  std::vector<float> s1(size_t(M * nb)), s2(s1.size());
  R.act_quant({x.data(), q1.data(), s1.data(), M, K});
  C.act_quant({x.data(), q2.data(), s2.data(), M, K});
  for (size_t i = 0; i < q1.size(); ++i)
    if (q1[i] != q2[i]) {
      ADD_FAILURE() << "q differs at " << i << ": x bits " << x[i].bits << " ref " << int(q1[i])
                    << " cpu " << int(q2[i]) << " (M=" << M << " K=" << K << ")";
      break;
    }
  for (size_t i = 0; i < s1.size(); ++i)
    if (std::memcmp(&s1[i], &s2[i], 4) != 0) {
      ADD_FAILURE() << "s differs at block " << i << ": ref " << s1[i] << " cpu " << s2[i];
      break;
    }
}

TEST(OpsCpu, ActQuantExact) {
  Rng rng(1);
  for_each_target([&] {
    for (auto [M, K] : {std::pair<int64_t, int64_t>{1, 1}, {3, 300}, {2, 128}, {1, 7}, {4, 7168}}) {
      check_act_quant(rng.bf16s(size_t(M * K), 3.0f), M, K);
    }
    // Every bf16 bit pattern (quiet NaN, ±inf, subnormals, ±0) in blocks of 128. Signalling
    // NaNs are made quiet: with them the reference's serial std::fmax depends on the position
    // (fmax(x, sNaN) = NaN), a case arithmetic never produces and the kernel does not mimic.
    std::vector<bf16> all(65536);
    for (int i = 0; i < 65536; ++i) {
      const bool snan = (i & 0x7f80) == 0x7f80 && (i & 0x7f) != 0 && (i & 0x40) == 0;
      all[size_t(i)] = bf16{uint16_t(snan ? i | 0x40 : i)};
    }
    check_act_quant(all, 512, 128);
    // Tiny blocks (amax clamps at 1e-4) so values land in the fp8 subnormal range.
    std::vector<bf16> tiny = rng.bf16s(1000, 1e-5f);
    check_act_quant(tiny, 1, 1000);
  });
}

// ---- fp8_gemm. Tolerance: each 128-block dot of exact fp8 products has error <= 127·u·Σ|a·w|
// in either order (u = 2^-24), so the two differ by <= 2·128·u·Σ|a·w| per block; scaled and
// accumulated over nb blocks adds <= 2·nb·u·Σ_kb|s_kb|·Σ|a·w|. The final bf16 roundings of
// nearby values differ by <= 2^-8·|ref| more. The AVX512-BF16 path (every M) forms each block
// dot from 16 lane partials (4 chained vdpbf16ps of pair sums: depth <= 8) reduced in 4 steps,
// then scales and adds it as the reference does: <= (8 + 4)·u·Σ|a·w| per block, inside the same
// bound.
void check_fp8_gemm(Rng& rng, int64_t M, int64_t N, int64_t K, int64_t ldy, bool expect_exact) {
  const int64_t nb = ceil_div(K, kBlock);
  std::vector<bf16> x = rng.bf16s(size_t(M * K), 2.0f);
  std::vector<fp8> a(size_t(M * K));
  std::vector<float> a_s(size_t(M * nb));
  R.act_quant({x.data(), a.data(), a_s.data(), M, K});
  std::vector<fp8> w = rng.fp8s(size_t(N * K));
  std::vector<float> w_s = rng.pow2s(size_t(ceil_div(N, kBlock) * nb), -12, -6);
  std::vector<bf16> y1(size_t(M * ldy)), y2(y1.size(), bf16{0x1234});
  std::vector<bf16> y2_init = y2;
  R.fp8_gemm({a.data(), a_s.data(), w.data(), w_s.data(), y1.data(), M, N, K, ldy});
  C.fp8_gemm({a.data(), a_s.data(), w.data(), w_s.data(), y2.data(), M, N, K, ldy});
  int64_t exact = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double sabs = 0.0;
      for (int64_t b = 0; b < nb; ++b) {
        double blk = 0.0;
        for (int64_t k = b * kBlock; k < std::min(K, (b + 1) * kBlock); ++k)
          blk += std::fabs(double(kFp8Table[a[size_t(m * K + k)]]) * kFp8Table[w[size_t(n * K + k)]]);
        sabs += blk * a_s[size_t(m * nb + b)] * w_s[size_t((n / kBlock) * nb + b)];
      }
      const double r = f(y1[size_t(m * ldy + n)]), c = f(y2[size_t(m * ldy + n)]);
      const double tol = 2.0 * (128 + nb) * kU * sabs + kBf16 * std::fabs(r) + 1e-30;
      ASSERT_LE(std::fabs(r - c), tol) << "M=" << M << " N=" << N << " K=" << K << " m=" << m
                                       << " n=" << n;
      exact += y1[size_t(m * ldy + n)].bits == y2[size_t(m * ldy + n)].bits;
    }
  if (expect_exact) EXPECT_EQ(exact, M * N) << "M=" << M << " N=" << N << " K=" << K;
  // Row independence: each row computed alone is bit-identical to the same row of the M-row call
  // (batching and chunking must never change a result).
  for (int64_t m = 0; m < M; ++m) {
    std::vector<bf16> y1row(size_t(ldy), bf16{0});
    C.fp8_gemm({a.data() + m * K, a_s.data() + m * nb, w.data(), w_s.data(), y1row.data(), 1, N, K, ldy});
    for (int64_t n = 0; n < N; ++n)
      ASSERT_EQ(y1row[size_t(n)].bits, y2[size_t(m * ldy + n)].bits) << "row " << m << " of M=" << M << " n=" << n;
  }
  for (int64_t m = 0; m < M; ++m)  // padding columns n >= N untouched
    for (int64_t n = N; n < ldy; ++n)
      ASSERT_EQ(y2[size_t(m * ldy + n)].bits, y2_init[size_t(m * ldy + n)].bits);
}

TEST(OpsCpu, Fp8Gemm) {
  Rng rng(2);
  for_each_target([&] {
    // One arithmetic for every M (reduced lane partial sums, within the derived bound), and each
    // row equal to itself computed alone: M = 1..7 and 16..33 cover the 4/2/1-row passes.
    check_fp8_gemm(rng, 1, 37, 300, 37, false);
    check_fp8_gemm(rng, 3, 130, 257, 140, false);
    check_fp8_gemm(rng, 8, 256, 128, 256, false);
    check_fp8_gemm(rng, 5, 1, 1, 1, false);
    check_fp8_gemm(rng, 7, 9, 130, 9, false);
    check_fp8_gemm(rng, 20, 70, 200, 75, false);
    check_fp8_gemm(rng, 33, 129, 384, 129, false);
  });
}

// ---- linear_f32. Tolerance: fp32 dot of length K in any order vs the double reference:
// <= K·u·Σ|x·w| (standard bound) plus the final fp32 rounding of the reference, u·|ref|.
TEST(OpsCpu, LinearF32) {
  Rng rng(3);
  for_each_target([&] {
    for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 13, 7}, {5, 33, 300},
                           {2, 256, 1024}, {17, 3, 129}}) {
      std::vector<float> x = rng.floats(size_t(M * K));
      std::vector<bf16> w = rng.bf16s(size_t(N * K), 0.1f);
      std::vector<float> y1(size_t(M * N)), y2(y1.size());
      R.linear_f32({x.data(), w.data(), y1.data(), M, N, K});
      C.linear_f32({x.data(), w.data(), y2.data(), M, N, K});
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
          double sabs = 0.0;
          for (int64_t k = 0; k < K; ++k)
            sabs += std::fabs(double(x[size_t(m * K + k)]) * f(w[size_t(n * K + k)]));
          const double r = y1[size_t(m * N + n)], tol = (K + 1) * kU * sabs + kU * std::fabs(r);
          ASSERT_LE(std::fabs(r - y2[size_t(m * N + n)]), tol) << M << "x" << N << "x" << K;
        }
    }
  });
}

// ---- norms. The sums are double in both (order differs only at the 2^-53 level), so the
// fp32 rsqrt argument can differ by at most one fp32 rounding; the bf16 output then differs by
// at most one bf16 rounding flip: |Δ| <= 2^-8·|ref|. The updated residual is elementwise: exact.
TEST(OpsCpu, RmsNorm) {
  Rng rng(4);
  for_each_target([&] {
    for (int64_t D : {1, 7, 300, 7168}) {
      const int64_t M = 3;
      for (bool with_res : {false, true}) {
        std::vector<bf16> x = rng.bf16s(size_t(M * D)), res = rng.bf16s(size_t(M * D));
        std::vector<float> w = rng.floats(size_t(D));
        std::vector<bf16> r1 = res, r2 = res, y1(x.size()), y2(x.size());
        R.rms_norm({x.data(), with_res ? r1.data() : nullptr, w.data(), y1.data(), M, D, 1e-6f});
        C.rms_norm({x.data(), with_res ? r2.data() : nullptr, w.data(), y2.data(), M, D, 1e-6f});
        EXPECT_TRUE(same_bits(r1, r2));
        for (size_t i = 0; i < y1.size(); ++i)
          ASSERT_LE(std::fabs(f(y1[i]) - f(y2[i])), kBf16 * std::fabs(f(y1[i]))) << D << " " << i;
      }
    }
  });
}

// LayerNorm: as above plus the (x - mean) cancellation: mean and variance agree to ~2^-50
// relative, so |Δ| <= 2^-8·|ref| + 2^-20·max|y| covers it with a wide margin.
TEST(OpsCpu, LayerNorm) {
  Rng rng(5);
  for_each_target([&] {
    for (int64_t D : {1, 7, 128, 300}) {
      const int64_t M = 4;
      std::vector<bf16> x = rng.bf16s(size_t(M * D)), y1(size_t(M * D)), y2(y1.size());
      std::vector<float> w = rng.floats(size_t(D)), b = rng.floats(size_t(D));
      R.layer_norm({x.data(), w.data(), b.data(), y1.data(), M, D, 1e-6f});
      C.layer_norm({x.data(), w.data(), b.data(), y2.data(), M, D, 1e-6f});
      double ymax = 0;
      for (auto v : y1) ymax = std::max(ymax, std::fabs(double(f(v))));
      for (size_t i = 0; i < y1.size(); ++i)
        ASSERT_LE(std::fabs(f(y1[i]) - f(y2[i])), kBf16 * std::fabs(f(y1[i])) + ymax / (1 << 20));
    }
  });
}

// ---- elementwise ops: exact.
TEST(OpsCpu, RopeExact) {
  Rng rng(6);
  for_each_target([&] {
    for (bool inter : {false, true})
      for (auto [rd, off, stride] : {std::tuple<int64_t, int64_t, int64_t>{64, 0, 128},
                                     {64, 128, 192}, {6, 3, 11}, {2, 0, 2}}) {
        const int64_t M = 3, H = 5, maxpos = 50;
        std::vector<bf16> x = rng.bf16s(size_t(M * H * stride)), x2 = x;
        std::vector<int32_t> pos = {0, 17, 49};
        std::vector<float> cs = rng.floats(size_t(maxpos * rd / 2)), sn = rng.floats(cs.size());
        R.rope({x.data(), pos.data(), cs.data(), sn.data(), M, H, stride, off, rd, inter});
        C.rope({x2.data(), pos.data(), cs.data(), sn.data(), M, H, stride, off, rd, inter});
        EXPECT_TRUE(same_bits(x, x2)) << "rope_dim=" << rd << " interleaved=" << inter;
      }
  });
}

TEST(OpsCpu, HadamardExact) {
  Rng rng(7);
  for_each_target([&] {
    for (int64_t n : {1, 2, 4, 8, 16, 32, 128, 256}) {
      std::vector<bf16> x = rng.bf16s(size_t(3 * n)), x2 = x;
      R.hadamard({x.data(), 3, n});
      C.hadamard({x2.data(), 3, n});
      EXPECT_TRUE(same_bits(x, x2)) << "n=" << n;
    }
  });
}

TEST(OpsCpu, SiluMulExact) {
  Rng rng(8);
  std::vector<bf16> g = rng.bf16s(3 * 9001, 4.0f), u = rng.bf16s(g.size());
  std::vector<bf16> h1(g.size()), h2(g.size());
  R.silu_mul({g.data(), u.data(), h1.data(), 3, 9001});
  C.silu_mul({g.data(), u.data(), h2.data(), 3, 9001});
  EXPECT_TRUE(same_bits(h1, h2));
}

TEST(OpsCpu, MoeGateExact) {
  Rng rng(9);
  for (bool bias : {false, true})
    for (bool norm : {false, true})
      for (bool ties : {false, true}) {
        const int64_t T = 5, E = 64, G = 8, TG = 3, TOPK = 6;
        std::vector<float> lg = rng.floats(size_t(T * E)), b = rng.floats(size_t(E), 0.1f);
        if (ties)
          for (auto& v : lg) v = std::round(v);  // many equal logits and group scores
        std::vector<int32_t> e1(size_t(T * TOPK)), e2(e1.size());
        std::vector<float> w1(e1.size()), w2(e1.size()), b1(size_t(T * E)), b2(b1.size());
        R.moe_gate({lg.data(), bias ? b.data() : nullptr, e1.data(), w1.data(), b1.data(), T, E,
                    G, TG, TOPK, norm, 2.5f});
        C.moe_gate({lg.data(), bias ? b.data() : nullptr, e2.data(), w2.data(), b2.data(), T, E,
                    G, TG, TOPK, norm, 2.5f});
        EXPECT_EQ(e1, e2);
        EXPECT_TRUE(same_bytes(w1, w2));
        EXPECT_TRUE(same_bytes(b1, b2));
      }
}

// ---- indexer logits over a paged cache with a shuffled block table. Every FP8 product q·k is
// exact (fp32 FMA path and the AVX512-BF16 path alike), so only the order of the D-term sum of
// each head's dot differs: each order has error <= (D-1)·u·A_h (A_h = Σ_d |q_d k_d|, u = 2^-24),
// so |Δdot_h| <= 2·D·u·A_h; ReLU is 1-Lipschitz. The head sum runs in increasing h with the
// reference's mul-then-add in both: the perturbed inputs move it by <= Σ_h |w_h|·|Δdot_h|·(1+u),
// and each sum's own rounding (products and H adds) is <= (H+1)·u·Σ_h |w_h|·A_h, twice. Times
// k_s (one rounding, u·|out| each). Total: k_s·(2D + 2H + 4)·u·Σ_h |w_h|·A_h + 2u·|out|.
// The fp32 targets (sums in increasing d) stay bit-exact; -inf at the same positions always.
struct IndexerCase {
  int64_t S, H, D, N, page_size, bt_stride_extra;
  bool shared_table;
  std::vector<int32_t> end;
};

// Returns out and, in *tol (when given), the bound above for each output.
std::vector<float> run_indexer(const OpTable& T, const IndexerCase& c, uint32_t seed,
                               std::vector<double>* tol = nullptr) {
  Rng rng(seed);
  const int64_t pages_per_row = ceil_div(c.N, c.page_size);
  const int64_t rows = c.shared_table ? 1 : c.S;
  const int64_t num_pages = rows * pages_per_row + 3;
  IndexPages kp{nullptr, nullptr, c.shared_table ? 0 : pages_per_row + c.bt_stride_extra,
                c.page_size, c.D, num_pages};
  std::vector<uint8_t> pool(size_t(num_pages * kp.page_bytes()));
  for (int64_t pg = 0; pg < num_pages; ++pg) {
    uint8_t* base = pool.data() + pg * kp.page_bytes();
    std::vector<fp8> k = rng.fp8s(size_t(c.page_size * c.D));
    std::memcpy(base, k.data(), k.size());
    for (int64_t s = 0; s < c.page_size; ++s) {
      const float ks = std::fabs(rng.normal()) + 0.01f;
      std::memcpy(base + c.page_size * c.D + 4 * s, &ks, 4);
    }
  }
  std::vector<int32_t> perm(static_cast<size_t>(num_pages));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng.g);
  const int64_t bts = std::max<int64_t>(kp.bt_stride, pages_per_row);
  std::vector<int32_t> bt(size_t(rows * bts), -7);  // -7 in the unused stride padding
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < pages_per_row; ++b)
      bt[size_t(r * bts + b)] = perm[size_t(r * pages_per_row + b)];
  kp.pool = pool.data();
  kp.block_table = bt.data();
  std::vector<fp8> q = rng.fp8s(size_t(c.S * c.H * c.D));
  std::vector<float> w = rng.floats(size_t(c.S * c.H));
  std::vector<float> out(size_t(c.S * c.N), 123.0f);
  T.indexer_logits({q.data(), w.data(), kp, c.end.data(), out.data(), c.S, c.H, c.N});
  if (tol) {
    tol->assign(out.size(), 0.0);
    for (int64_t t = 0; t < c.S; ++t) {
      const int32_t* row = bt.data() + (c.shared_table ? 0 : t * bts);
      for (int64_t s = 0; s < c.end[size_t(t)]; ++s) {
        const uint8_t* base = pool.data() + int64_t(row[s / c.page_size]) * kp.page_bytes();
        const int64_t slot = s % c.page_size;
        float ks;
        std::memcpy(&ks, base + c.page_size * c.D + 4 * slot, 4);
        double wa = 0.0;
        for (int64_t h = 0; h < c.H; ++h) {
          double a = 0.0;
          for (int64_t d = 0; d < c.D; ++d)
            a += std::fabs(double(kFp8Table[q[size_t((t * c.H + h) * c.D + d)]]) *
                           kFp8Table[base[slot * c.D + d]]);
          wa += std::fabs(double(w[size_t(t * c.H + h)])) * a;
        }
        const double o = std::fabs(double(out[size_t(t * c.N + s)]));
        (*tol)[size_t(t * c.N + s)] = ks * (2 * c.D + 2 * c.H + 4) * kU * wa + 2 * kU * o;
      }
    }
  }
  return out;
}

void expect_indexer_close(const std::vector<float>& ref, const std::vector<float>& cpu,
                          const std::vector<double>& tol, const IndexerCase& c) {
  ASSERT_EQ(ref.size(), cpu.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isinf(ref[i]) || std::isinf(cpu[i])) {
      ASSERT_EQ(ref[i], cpu[i]) << "i=" << i << " S=" << c.S << " H=" << c.H << " D=" << c.D;
      continue;
    }
    ASSERT_LE(std::fabs(double(ref[i]) - cpu[i]), tol[i])
        << "i=" << i << " S=" << c.S << " H=" << c.H << " D=" << c.D << " N=" << c.N;
  }
}

TEST(OpsCpu, IndexerLogits) {
  const std::vector<IndexerCase> cases = {
      {3, 5, 40, 100, 7, 2, false, {100, 1, 57}},
      {2, 64, 128, 130, 64, 0, false, {130, 65}},
      {3, 6, 128, 77, 16, 0, true, {77, 0, 33}},
      {1, 64, 128, 300, 64, 0, true, {300}},
      {1, 3, 5, 1, 1, 0, true, {1}},
  };
  for_each_target([&] {
    uint32_t seed = 10;
    for (const auto& c : cases) {
      std::vector<double> tol;
      const auto a = run_indexer(R, c, seed, &tol), b = run_indexer(C, c, seed);
      ++seed;
      expect_indexer_close(a, b, tol, c);
      if (!bf16_path_possible())
        EXPECT_TRUE(same_bytes(a, b)) << "S=" << c.S << " H=" << c.H << " D=" << c.D;
    }
  });
}

// ---- top-k: the kernel takes the same lowest-index-first tie-break, so even ties agree.
TEST(OpsCpu, TopKExact) {
  Rng rng(11);
  for (auto [S, N, k] : {std::tuple<int64_t, int64_t, int64_t>{4, 1000, 37}, {3, 50, 64},
                         {2, 5000, 2048}, {1, 1, 1}, {2, 300, 1}}) {
    for (int mode = 0; mode < 3; ++mode) {
      std::vector<float> sc = rng.floats(size_t(S * N));
      if (mode == 1)
        for (auto& v : sc) v = float(rng.uni(-3, 3));  // many exact ties (incl. ±0 below)
      if (mode == 2) {
        for (auto& v : sc) v = std::round(v * 4) / 4;
        sc[0] = std::numeric_limits<float>::quiet_NaN();
        sc[size_t(N / 2)] = -0.0f;
        sc[size_t(S * N - 1)] = kNegInf;
      }
      std::vector<int32_t> end(static_cast<size_t>(S));
      for (int64_t t = 0; t < S; ++t) end[size_t(t)] = int32_t(t == 1 ? 0 : N - t * (N / 5));
      std::vector<int32_t> i1(size_t(S * k)), i2(i1.size());
      R.topk({sc.data(), end.data(), i1.data(), S, N, k});
      C.topk({sc.data(), end.data(), i2.data(), S, N, k});
      EXPECT_EQ(i1, i2) << "S=" << S << " N=" << N << " k=" << k << " mode=" << mode;
    }
  }
}

// ---- sparse MLA decode. All products (bf16 x fp8·2^e, bf16 p x latent) are exact. The fp32
// targets sum scores in increasing dims and P·V over keys in order: bit-exact. The AVX512-BF16
// path (vdpbf16ps) adds pairs of products, so both sums change order: |Δ(q·c)| <= 2·F·u·Σ|q·c|,
// which can flip the bf16 rounding of a score by one ulp (2^-8 relative) and hence one
// probability by <= 2^-8 relative plus one bf16 ulp of p; the P·V sum adds <= 2·n·u·Σ|p·c|.
// Same metric as sparse MHA prefill below: cosine difference <= 2^-16, |Δ| <= 2^-5·max|o|.
double cos_diff(const std::vector<bf16>& a, const std::vector<bf16>& b);

struct MlaData {
  std::vector<bf16> q_abs, q_pe;
  std::vector<uint8_t> cache;
  std::vector<int32_t> idx;
  SparseMlaDecode p;
};

MlaData make_mla(Rng& rng, int64_t S, int64_t H, int64_t L, int64_t Rp, int64_t N, int64_t K) {
  MlaData d;
  const LatentLayout lay{L, Rp};
  d.q_abs = rng.bf16s(size_t(S * H * L), 0.3f);
  d.q_pe = rng.bf16s(size_t(S * H * Rp), 0.3f);
  d.cache.resize(size_t(N * lay.row_bytes()));
  for (int64_t r = 0; r < N; ++r) {
    uint8_t* row = d.cache.data() + r * lay.row_bytes();
    std::vector<fp8> c = rng.fp8s(size_t(L));
    if (!c.empty()) std::memcpy(row, c.data(), c.size());
    for (int64_t b = 0; b < ceil_div(L, kBlock); ++b) {
      const float s = std::ldexp(1.0f, rng.uni(-9, -6));
      std::memcpy(row + lay.scale_off() + 4 * b, &s, 4);
    }
    std::vector<bf16> pe = rng.bf16s(size_t(Rp));
    if (!pe.empty()) std::memcpy(row + lay.rope_off(), pe.data(), pe.size() * 2);
  }
  d.idx.resize(size_t(S * K));
  for (auto& v : d.idx) v = rng.uni(0, 9) == 0 ? -1 : rng.uni(0, int(N - 1));
  if (S > 1)
    for (int64_t j = 0; j < K; ++j) d.idx[size_t(K + j)] = -1;  // row 1: no key at all -> zeros
  d.p = SparseMlaDecode{d.q_abs.data(), d.q_pe.data(), d.cache.data(), d.idx.data(), nullptr,
                        S, H, N, K, lay, 0.0417f};
  return d;
}

TEST(OpsCpu, SparseMlaDecode) {
  Rng rng(12);
  for_each_target([&] {
    for (auto [S, H, L, Rp, N, K] :
         {std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>{3, 5, 200, 10, 50, 20},
          {1, 16, 512, 64, 300, 256}, {2, 9, 64, 0, 7, 40}, {1, 1, 1, 1, 1, 1}}) {
      MlaData d = make_mla(rng, S, H, L, Rp, N, K);
      std::vector<bf16> o1(size_t(S * H * L)), o2(o1.size(), bf16{0x7777});
      d.p.o_lat = o1.data();
      R.sparse_mla_decode(d.p);
      d.p.o_lat = o2.data();
      C.sparse_mla_decode(d.p);
      if (!bf16_path_possible()) {
        EXPECT_TRUE(same_bits(o1, o2)) << "S=" << S << " H=" << H << " L=" << L << " R=" << Rp;
        continue;
      }
      EXPECT_LE(cos_diff(o1, o2), 1.0 / 65536) << "S=" << S << " H=" << H << " L=" << L;
      double mx = 0;
      for (auto x : o1) mx = std::max(mx, std::fabs(double(f(x))));
      for (size_t i = 0; i < o1.size(); ++i)
        ASSERT_LE(std::fabs(f(o1[i]) - f(o2[i])), mx / 32) << "S=" << S << " H=" << H << " i=" << i;
    }
  });
}

// ---- sparse MHA prefill: only the q·k sums change order; a flipped bf16 rounding of a score
// perturbs one probability by <= 2^-8 relative. Metric (DeepGEMM): cosine difference, bound
// 2^-16 = (one bf16 ulp)^2, plus |Δ| <= 2^-5·max|o| elementwise.
// The AVX512-BF16 path (mha_bf16.cc) fits the same bounds: (a) q·k pair/tree sums: as above;
// (b) exp within 1 ulp of std::exp and lane-split fp32 sums change e/sum by <= (n+3)·2^-24
// relative (n <= 300 here: < 2^-15 << 2^-9), at most one flipped bf16 rounding of p, again
// <= 2^-8 relative; (c) P·V in key pairs: exact products, fp32 reorder error <= n·2^-24·Σp|v|
// < 2^-15·max|v|, at most one flipped bf16 output rounding (2^-8·|o|, inside the 2^-5·max|o|
// bound); (d) vdpbf16ps flushes p < 2^-126 to zero: error <= n·2^-126·max|v|, negligible.
// Hence (a)-(c) perturb o by O(2^-8) relative like the fp32 path: cosine bound unchanged.
double cos_diff(const std::vector<bf16>& a, const std::vector<bf16>& b) {
  double xy = 0, xx = 0, yy = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    xy += double(f(a[i])) * f(b[i]);
    xx += double(f(a[i])) * f(a[i]);
    yy += double(f(b[i])) * f(b[i]);
  }
  return xx + yy == 0 ? 0 : 1 - 2 * xy / (xx + yy);
}

TEST(OpsCpu, SparseMhaPrefill) {
  Rng rng(13);
  for_each_target([&] {
    for (auto [S, T, H, dqk, dv, K] :
         {std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>{3, 40, 5, 192, 128, 17},
          {4, 100, 3, 37, 19, 64}, {1, 1, 1, 1, 1, 1}, {2, 30, 2, 64, 64, 50},
          {3, 300, 6, 200, 160, 300}, {4, 20, 9, 192, 128, 40}}) {  // last: packed K/V
      std::vector<bf16> q = rng.bf16s(size_t(S * H * dqk)), k = rng.bf16s(size_t(T * H * dqk));
      std::vector<bf16> v = rng.bf16s(size_t(T * H * dv));
      std::vector<int32_t> idx(size_t(S * K));
      for (auto& i : idx) i = rng.uni(0, 7) == 0 ? -1 : rng.uni(0, int(T - 1));
      idx[0] = 0;
      if (S >= 3) std::fill(idx.end() - K, idx.end(), -1);  // a query without keys: zeros
      std::vector<bf16> o1(size_t(S * H * dv)), o2(o1.size());
      const float scale = float(1.0 / std::sqrt(double(dqk)));
      R.sparse_mha_prefill({q.data(), k.data(), v.data(), idx.data(), o1.data(), S, T, H, dqk, dv,
                            K, scale});
      C.sparse_mha_prefill({q.data(), k.data(), v.data(), idx.data(), o2.data(), S, T, H, dqk, dv,
                            K, scale});
      EXPECT_LE(cos_diff(o1, o2), 1.0 / 65536) << S << " " << dqk;
      double mx = 0;
      for (auto x : o1) mx = std::max(mx, std::fabs(double(f(x))));
      for (size_t i = 0; i < o1.size(); ++i) ASSERT_LE(std::fabs(f(o1[i]) - f(o2[i])), mx / 32);
    }
  });
}

// ---- head_matmul. Non-transposed: increasing-k sums of exact bf16 products: bit-exact.
// Transposed: lanes over k, bound (K+1)·u·Σ|x·w| + 2^-8·|ref| (see fp8_gemm).
TEST(OpsCpu, HeadMatmul) {
  Rng rng(14);
  for_each_target([&] {
    for (bool tw : {false, true})
      for (auto [S, H, K, N] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{1, 4, 128, 512},
                                {3, 5, 37, 70}, {2, 2, 512, 128}, {1, 1, 1, 1}}) {
        const int64_t xh = K + 1, xs = H * xh + 3, wr = (tw ? K : N) + 2, wh = (tw ? N : K) * wr + 5;
        std::vector<bf16> x = rng.bf16s(size_t(S * xs)), w = rng.bf16s(size_t(H * wh), 0.2f);
        std::vector<bf16> y1(size_t(S * H * N)), y2(y1.size());
        R.head_matmul({x.data(), w.data(), y1.data(), S, H, K, N, xs, xh, wh, wr, tw});
        C.head_matmul({x.data(), w.data(), y2.data(), S, H, K, N, xs, xh, wh, wr, tw});
        if (!tw) {
          EXPECT_TRUE(same_bits(y1, y2)) << S << "x" << H << "x" << K << "x" << N;
          continue;
        }
        for (int64_t s = 0; s < S; ++s)
          for (int64_t h = 0; h < H; ++h)
            for (int64_t n = 0; n < N; ++n) {
              double sabs = 0;
              for (int64_t k = 0; k < K; ++k)
                sabs += std::fabs(double(f(x[size_t(s * xs + h * xh + k)])) *
                                  f(w[size_t(h * wh + n * wr + k)]));
              const size_t i = size_t((s * H + h) * N + n);
              ASSERT_LE(std::fabs(f(y1[i]) - f(y2[i])),
                        (K + 1) * kU * sabs + kBf16 * std::fabs(f(y1[i])));
            }
      }
  });
}

// ---- thread-count independence: every kernel partitions over outputs, so 1 and 3 threads
// give bit-identical results.
TEST(OpsCpu, ThreadCountIndependent) {
  auto run_all = [](std::vector<std::vector<uint8_t>>& outs) {
    Rng rng(15);
    auto keep = [&](const void* p, size_t n) {
      outs.emplace_back(static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
    };
    for (int64_t M : {3, 40}) {  // both fp8_gemm paths
      const int64_t N = 300, K = 700, nb = ceil_div(K, kBlock);
      std::vector<bf16> x = rng.bf16s(size_t(M * K));
      std::vector<fp8> a(size_t(M * K));
      std::vector<float> a_s(size_t(M * nb));
      C.act_quant({x.data(), a.data(), a_s.data(), M, K});
      std::vector<fp8> w = rng.fp8s(size_t(N * K));
      std::vector<float> w_s = rng.pow2s(size_t(ceil_div(N, kBlock) * nb), -10, -6);
      std::vector<bf16> y(size_t(M * N));
      C.fp8_gemm({a.data(), a_s.data(), w.data(), w_s.data(), y.data(), M, N, K, N});
      keep(y.data(), y.size() * 2);
      std::vector<float> xf = rng.floats(size_t(M * K)), yf(size_t(M * N));
      std::vector<bf16> wb = rng.bf16s(size_t(N * K));
      C.linear_f32({xf.data(), wb.data(), yf.data(), M, N, K});
      keep(yf.data(), yf.size() * 4);
      std::vector<bf16> res = rng.bf16s(size_t(M * K)), yn(size_t(M * K));
      std::vector<float> g = rng.floats(size_t(K));
      C.rms_norm({x.data(), res.data(), g.data(), yn.data(), M, K, 1e-6f});
      keep(yn.data(), yn.size() * 2);
    }
    const IndexerCase ic{3, 64, 128, 500, 64, 1, false, {500, 123, 77}};
    const auto logits = run_indexer(C, ic, 16);
    keep(logits.data(), logits.size() * 4);
    std::vector<int32_t> end(ic.end), idx(size_t(3 * 64));
    C.topk({logits.data(), end.data(), idx.data(), 3, 500, 64});
    keep(idx.data(), idx.size() * 4);
    MlaData d = make_mla(rng, 2, 16, 512, 64, 400, 300);
    std::vector<bf16> o(size_t(2 * 16 * 512));
    d.p.o_lat = o.data();
    C.sparse_mla_decode(d.p);
    keep(o.data(), o.size() * 2);
    std::vector<bf16> q = rng.bf16s(size_t(4 * 8 * 192)), k = rng.bf16s(size_t(50 * 8 * 192));
    std::vector<bf16> v = rng.bf16s(size_t(50 * 8 * 128)), om(size_t(4 * 8 * 128));
    std::vector<int32_t> sel(size_t(4 * 30));
    for (auto& i : sel) i = rng.uni(0, 49);
    C.sparse_mha_prefill({q.data(), k.data(), v.data(), sel.data(), om.data(), 4, 50, 8, 192, 128,
                          30, 0.07f});
    keep(om.data(), om.size() * 2);
    std::vector<bf16> hw = rng.bf16s(size_t(8 * 192 * 100)), hy(size_t(4 * 8 * 100));
    C.head_matmul({q.data(), hw.data(), hy.data(), 4, 8, 192, 100, 8 * 192, 192, 192 * 100, 100,
                   false});
    keep(hy.data(), hy.size() * 2);
    C.head_matmul({q.data(), hw.data(), hy.data(), 4, 8, 192, 100, 8 * 192, 192, 192 * 100, 192,
                   true});
    keep(hy.data(), hy.size() * 2);
  };
  std::vector<std::vector<uint8_t>> one, three;
  set_global_threads(1);
  run_all(one);
  set_global_threads(3);
  run_all(three);
  set_global_threads(default_thread_count());
  ASSERT_EQ(one.size(), three.size());
  for (size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(one[i] == three[i]) << "output #" << i;
}

}  // namespace
}  // namespace dsa::ops
