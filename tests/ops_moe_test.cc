// The grouped routed-expert ops (moe_route, grouped_fp8_gemm, moe_combine) against straightforward
// compositions of the per-expert ops they replace (host token lists, one fp8_gemm / scale_add per
// expert), on the ref backend and the cpu backend (which must give the same bits).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "base/error.h"
#include "base/numeric.h"
#include "base/thread_pool.h"
#include "ops/ops.h"

#include "test_util.h"

namespace dsa::ops {
namespace {

const OpTable& R = ref_ops();
const OpTable& C = cpu_ops();
using test::Rng;

template <class T>
bool same_bytes(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// k distinct experts per token out of E, drawn from `pool` (a subset: the others get no token);
// ascending per token like moe_gate, or shuffled (replayed choices may come in any order).
std::vector<int32_t> choose(Rng& rng, int64_t S, int64_t k, const std::vector<int32_t>& pool, bool sorted) {
  std::vector<int32_t> ex(size_t(S * k)), p = pool;
  for (int64_t s = 0; s < S; ++s) {
    std::shuffle(p.begin(), p.end(), rng.g);
    std::copy(p.begin(), p.begin() + k, ex.begin() + s * k);
    if (sorted) std::sort(ex.begin() + s * k, ex.begin() + (s + 1) * k);
  }
  return ex;
}

struct Route {
  std::vector<int32_t> offsets, rows, pos;
  std::vector<float> row_w;
};

Route run_route(const OpTable& T, const std::vector<int32_t>& ex, const std::vector<float>& wt, int64_t S, int64_t k,
                int64_t E) {
  Route r{std::vector<int32_t>(size_t(E + 1), -7), std::vector<int32_t>(size_t(S * k), -7),
          std::vector<int32_t>(size_t(S * k), -7), std::vector<float>(size_t(S * k), -7.0f)};
  T.moe_route({ex.data(), wt.data(), r.offsets.data(), r.rows.data(), r.row_w.data(), r.pos.data(), S, k, E});
  return r;
}

TEST(MoeRoute, MatchesHostTokenLists) {
  Rng rng(1);
  struct Case {
    int64_t S, k, E, used;  // `used` experts receive tokens, the rest none
    bool sorted;
  };
  for (Case c : {Case{1, 8, 256, 256, true}, Case{8, 8, 256, 256, true}, Case{37, 4, 16, 16, true},
                 Case{300, 4, 16, 6, false}, Case{5, 1, 3, 3, true}, Case{64, 6, 256, 9, false},
                 Case{2000, 8, 256, 256, true}}) {
    SCOPED_TRACE(testing::Message() << c.S << "x" << c.k << " E=" << c.E << " used=" << c.used);
    std::vector<int32_t> all(size_t(c.E));
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng.g);
    const std::vector<int32_t> pool(all.begin(), all.begin() + c.used);
    const auto ex = choose(rng, c.S, c.k, pool, c.sorted);
    const auto wt = rng.floats(size_t(c.S * c.k));
    // The per-expert token lists of the old host loop, concatenated in expert order.
    std::vector<std::vector<int32_t>> toks(size_t(c.E)), js(size_t(c.E));
    for (int64_t s = 0; s < c.S; ++s)
      for (int64_t j = 0; j < c.k; ++j) {
        toks[size_t(ex[s * c.k + j])].push_back(int32_t(s));
        js[size_t(ex[s * c.k + j])].push_back(int32_t(j));
      }
    const Route r = run_route(R, ex, wt, c.S, c.k, c.E);
    int32_t row = 0;
    for (int64_t e = 0; e < c.E; ++e) {
      ASSERT_EQ(r.offsets[e], row) << "expert " << e;
      for (size_t i = 0; i < toks[e].size(); ++i, ++row) {
        const int32_t s = toks[e][i], j = js[e][i];
        ASSERT_EQ(r.rows[row], s);
        ASSERT_EQ(r.row_w[row], wt[s * c.k + j]);
        ASSERT_EQ(r.pos[s * c.k + j], row);
      }
    }
    ASSERT_EQ(r.offsets[c.E], c.S * c.k);
    const Route rc = run_route(C, ex, wt, c.S, c.k, c.E);
    EXPECT_EQ(rc.offsets, r.offsets);
    EXPECT_EQ(rc.rows, r.rows);
    EXPECT_EQ(rc.pos, r.pos);
    EXPECT_TRUE(same_bytes(rc.row_w, r.row_w));
  }
}

TEST(MoeRoute, RejectsOutOfRangeIds) {
  std::vector<int32_t> ex = {0, 4};
  std::vector<float> wt = {1, 1};
  EXPECT_THROW(run_route(R, ex, wt, 1, 2, 4), Error);
  ex[1] = -1;
  EXPECT_THROW(run_route(R, ex, wt, 1, 2, 4), Error);
}

// The old per-expert combine: one scale_add per expert in ascending expert order.
std::vector<float> combine_by_scale_add(const std::vector<float>& acc0, const std::vector<bf16>& y,
                                        const Route& r, int64_t E, int64_t H) {
  std::vector<float> acc = acc0;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t r0 = r.offsets[e], M = r.offsets[e + 1] - r0;
    if (M == 0) continue;
    R.scale_add({acc.data(), r.rows.data() + r0, y.data() + r0 * H, r.row_w.data() + r0, M, H});
  }
  return acc;
}

TEST(MoeCombine, BitIdenticalToScaleAddPerExpert) {
  Rng rng(2);
  for (const bool sorted : {true, false})
    for (int64_t H : {1, 7, 128, 1000}) {
      const int64_t S = 45, k = 4, E = 16;
      SCOPED_TRACE(testing::Message() << "H=" << H << " sorted=" << sorted);
      const std::vector<int32_t> pool = {0, 2, 3, 5, 7, 8, 11, 12, 15};  // 1, 4, 6, ... get nothing
      const auto ex = choose(rng, S, k, pool, sorted);
      auto wt = rng.floats(size_t(S * k));
      const Route r = run_route(R, ex, wt, S, k, E);
      const auto y = rng.bf16s(size_t(S * k * H), 3.0f);
      const auto acc0 = rng.floats(size_t(S * H));  // a non-zero start exposes any reordering
      const auto want = combine_by_scale_add(acc0, y, r, E, H);
      for (const OpTable* T : {&R, &C}) {
        for (int threads : {1, 3}) {
          set_global_threads(threads);
          std::vector<float> acc = acc0;
          T->moe_combine({acc.data(), y.data(), r.pos.data(), r.row_w.data(), S, k, H});
          EXPECT_TRUE(same_bytes(acc, want)) << T->name << " threads=" << threads;
        }
      }
      set_global_threads(default_thread_count());
    }
}

TEST(MoeCombine, SkipsMissingChoices) {
  const int64_t H = 3;
  std::vector<float> acc = {1, 2, 3}, w = {0.5f, 2.0f};
  std::vector<bf16> y = {f32_to_bf16(2), f32_to_bf16(4), f32_to_bf16(6), f32_to_bf16(1), f32_to_bf16(1),
                         f32_to_bf16(1)};
  std::vector<int32_t> pos = {-1, 1, 0};
  R.moe_combine({acc.data(), y.data(), pos.data(), w.data(), 1, 3, H});
  EXPECT_EQ(acc, (std::vector<float>{1 + 1 + 2, 2 + 2 + 2, 3 + 3 + 2}));  // row 0 (w 0.5), then row 1 (w 2)
}

// Grouped GEMM inputs: activation rows [A, K] quantised, G groups of given sizes, weights per group.
struct Grouped {
  int64_t G, N, K, A, ldy, nb;
  std::vector<fp8> a;
  std::vector<float> a_s;
  std::vector<int32_t> offsets, rows;
  std::vector<std::vector<fp8>> w;
  std::vector<std::vector<float>> w_s;
  std::vector<const fp8*> wp;
  std::vector<const float*> wsp;
};

Grouped make_grouped(Rng& rng, const std::vector<int32_t>& sizes, int64_t N, int64_t K, int64_t A, int64_t ldy) {
  Grouped g{int64_t(sizes.size()), N, K, A, ldy, ceil_div(K, kBlock)};
  const auto x = rng.bf16s(size_t(A * K), 2.0f);
  g.a.resize(size_t(A * K));
  g.a_s.resize(size_t(A * g.nb));
  R.act_quant({x.data(), g.a.data(), g.a_s.data(), A, K});
  g.offsets.push_back(0);
  for (int32_t n : sizes) g.offsets.push_back(g.offsets.back() + n);
  for (int32_t r = 0; r < g.offsets.back(); ++r) g.rows.push_back(int32_t(rng.uni(0, int(A - 1))));
  for (int64_t i = 0; i < g.G; ++i) {
    g.w.push_back(rng.fp8s(size_t(N * K)));
    g.w_s.push_back(rng.pow2s(size_t(ceil_div(N, kBlock) * g.nb), -12, -6));
  }
  for (int64_t i = 0; i < g.G; ++i) {
    g.wp.push_back(g.w[size_t(i)].data());
    g.wsp.push_back(g.w_s[size_t(i)].data());
  }
  return g;
}

// rows == nullptr reads activation row r for output row r (needs A >= rows).
std::vector<bf16> run_grouped(const OpTable& T, const Grouped& g, bool gather, int64_t Rtot) {
  std::vector<bf16> y(size_t(std::max<int64_t>(Rtot * g.ldy, 1)), bf16{0x7fc1});  // non-null when R = 0
  T.grouped_fp8_gemm({g.a.data(), g.a_s.data(), gather ? g.rows.data() : nullptr, g.offsets.data(), g.wp.data(),
                      g.wsp.data(), y.data(), g.G, Rtot, g.N, g.K, g.ldy});
  return y;
}

// The old per-expert loop: rows gathered, then one fp8_gemm of the backend per non-empty group.
std::vector<bf16> per_group(const OpTable& T, const Grouped& g, bool gather, int64_t Rtot) {
  std::vector<bf16> y(size_t(std::max<int64_t>(Rtot * g.ldy, 1)), bf16{0x7fc1});
  for (int64_t i = 0; i < g.G; ++i) {
    const int64_t r0 = g.offsets[i], M = g.offsets[i + 1] - r0;
    if (M == 0) continue;
    std::vector<fp8> a(size_t(M * g.K));
    std::vector<float> as(size_t(M * g.nb));
    for (int64_t m = 0; m < M; ++m) {
      const int64_t src = gather ? g.rows[r0 + m] : r0 + m;
      std::copy_n(g.a.begin() + src * g.K, g.K, a.begin() + m * g.K);
      std::copy_n(g.a_s.begin() + src * g.nb, g.nb, as.begin() + m * g.nb);
    }
    T.fp8_gemm({a.data(), as.data(), g.wp[i], g.wsp[i], y.data() + r0 * g.ldy, M, g.N, g.K, g.ldy});
  }
  return y;
}

TEST(GroupedFp8Gemm, EqualsOneFp8GemmPerGroup) {
  Rng rng(3);
  struct Case {
    std::vector<int32_t> sizes;
    int64_t N, K, ldy;
  };
  // Empty groups (first, middle, last), single rows, groups above the cpu GEMV/GEMM switch (16)
  // and partial 128-blocks in N and K; ldy > N.
  for (const Case& c : {Case{{0, 1, 0, 3, 0}, 200, 300, 203}, Case{{20, 0, 1, 17, 2, 0}, 130, 257, 130},
                        Case{{1, 1, 1, 1, 1, 1, 1, 1}, 64, 128, 64}, Case{{150}, 129, 129, 131},
                        Case{{0, 0, 0}, 16, 16, 16}}) {
    const int64_t rows = std::accumulate(c.sizes.begin(), c.sizes.end(), int64_t(0));
    SCOPED_TRACE(testing::Message() << "G=" << c.sizes.size() << " rows=" << rows << " N=" << c.N << " K=" << c.K);
    const Grouped g = make_grouped(rng, c.sizes, c.N, c.K, std::max<int64_t>(rows, 5), c.ldy);
    for (const bool gather : {true, false})
      for (const int64_t extra : {int64_t(0), int64_t(2)}) {  // R above offsets[G]: rows past it untouched
        const int64_t Rtot = rows + extra;
        for (const OpTable* T : {&R, &C}) {
          const auto got = run_grouped(*T, g, gather, Rtot), want = per_group(*T, g, gather, Rtot);
          EXPECT_TRUE(same_bytes(got, want)) << T->name << " gather=" << gather << " R=" << Rtot;
        }
      }
  }
}

TEST(GroupedFp8Gemm, RejectsBadOffsets) {
  Rng rng(4);
  Grouped g = make_grouped(rng, {2, 1}, 16, 16, 3, 16);
  EXPECT_THROW(run_grouped(R, g, true, 2), Error);  // offsets[G] = 3 > R
  g.offsets = {0, 2, 1, 3};
  g.G = 3;
  g.wp.push_back(g.wp[0]);
  g.wsp.push_back(g.wsp[0]);
  EXPECT_THROW(run_grouped(R, g, true, 3), Error);  // decreasing
}

// The whole routed-expert block as run_ffn composes it (route → grouped gate/up → silu_mul →
// act_quant → grouped down → combine) equals the per-expert loop it replaced, bit for bit.
TEST(MoeBlock, GroupedPipelineEqualsPerExpertLoop) {
  Rng rng(5);
  const int64_t S = 40, k = 4, E = 16, H = 256, I = 192, nbH = ceil_div(H, kBlock), nbI = ceil_div(I, kBlock);
  const std::vector<int32_t> pool = {1, 2, 3, 4, 6, 9, 10, 13, 14};
  const auto ex = choose(rng, S, k, pool, true);
  const auto wt = rng.floats(size_t(S * k));
  const auto xn = rng.bf16s(size_t(S * H));
  struct Mat {
    std::vector<fp8> w;
    std::vector<float> s;
  };
  auto mat = [&](int64_t out, int64_t in) {
    return Mat{rng.fp8s(size_t(out * in)), rng.pow2s(size_t(ceil_div(out, kBlock) * ceil_div(in, kBlock)), -9, -5)};
  };
  std::vector<Mat> gate, up, down;
  for (int64_t e = 0; e < E; ++e) gate.push_back(mat(I, H)), up.push_back(mat(I, H)), down.push_back(mat(H, I));
  auto ptrs = [](const std::vector<Mat>& m, std::vector<const fp8*>& w, std::vector<const float*>& s) {
    for (auto& x : m) w.push_back(x.w.data()), s.push_back(x.s.data());
  };
  std::vector<const fp8*> gw, uw, dw;
  std::vector<const float*> gs, us, ds;
  ptrs(gate, gw, gs), ptrs(up, uw, us), ptrs(down, dw, ds);

  for (const OpTable* T : {&R, &C}) {
    SCOPED_TRACE(T->name);
    // Old: host token lists; per expert gather bf16 rows, quantise, gate/up, silu, quantise, down,
    // scale_add into the accumulator.
    std::vector<float> want(size_t(S * H), 0.0f);
    for (int64_t e = 0; e < E; ++e) {
      std::vector<int32_t> rows;
      std::vector<float> rw;
      for (int64_t i = 0; i < S * k; ++i)
        if (ex[i] == e) rows.push_back(int32_t(i / k)), rw.push_back(wt[i]);
      const int64_t M = int64_t(rows.size());
      if (M == 0) continue;
      std::vector<bf16> x(size_t(M * H)), g(size_t(M * I)), u(g.size()), h(g.size()), o(size_t(M * H));
      for (int64_t m = 0; m < M; ++m) std::copy_n(xn.begin() + rows[m] * H, H, x.begin() + m * H);
      std::vector<fp8> q(size_t(M * H)), hq(size_t(M * I));
      std::vector<float> qs(size_t(M * nbH)), hs(size_t(M * nbI));
      T->act_quant({x.data(), q.data(), qs.data(), M, H});
      T->fp8_gemm({q.data(), qs.data(), gw[e], gs[e], g.data(), M, I, H, I});
      T->fp8_gemm({q.data(), qs.data(), uw[e], us[e], u.data(), M, I, H, I});
      T->silu_mul({g.data(), u.data(), h.data(), M, I});
      T->act_quant({h.data(), hq.data(), hs.data(), M, I});
      T->fp8_gemm({hq.data(), hs.data(), dw[e], ds[e], o.data(), M, H, I, H});
      T->scale_add({want.data(), rows.data(), o.data(), rw.data(), M, H});
    }
    // New: the grouped ops.
    const int64_t Rn = S * k;
    const Route r = run_route(*T, ex, wt, S, k, E);
    std::vector<fp8> xq(size_t(S * H)), hq(size_t(Rn * I));
    std::vector<float> xs(size_t(S * nbH)), hs(size_t(Rn * nbI));
    std::vector<bf16> g(size_t(Rn * I)), u(g.size()), h(g.size()), o(size_t(Rn * H));
    T->act_quant({xn.data(), xq.data(), xs.data(), S, H});
    T->grouped_fp8_gemm({xq.data(), xs.data(), r.rows.data(), r.offsets.data(), gw.data(), gs.data(), g.data(), E, Rn,
                         I, H, I});
    T->grouped_fp8_gemm({xq.data(), xs.data(), r.rows.data(), r.offsets.data(), uw.data(), us.data(), u.data(), E, Rn,
                         I, H, I});
    T->silu_mul({g.data(), u.data(), h.data(), Rn, I});
    T->act_quant({h.data(), hq.data(), hs.data(), Rn, I});
    T->grouped_fp8_gemm({hq.data(), hs.data(), nullptr, r.offsets.data(), dw.data(), ds.data(), o.data(), E, Rn, H, I,
                         H});
    std::vector<float> acc(size_t(S * H), 0.0f);
    T->moe_combine({acc.data(), o.data(), r.pos.data(), r.row_w.data(), S, k, H});
    EXPECT_TRUE(same_bytes(acc, want));
  }
}

}  // namespace
}  // namespace dsa::ops
