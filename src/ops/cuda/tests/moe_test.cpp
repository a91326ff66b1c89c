// CUDA vs reference: the grouped routed-expert ops. moe_route and moe_combine are exact (integer
// bookkeeping; explicit fp32 multiply then add); grouped_fp8_gemm has fp8_gemm's tolerance.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>

#include "ops/cuda/tests/test_util.h"

namespace dsa::ops::cuda::test {
namespace {
const OpTable& R = ref_ops();

// k distinct experts per token from `pool`; ascending per token (moe_gate's order) or shuffled.
std::vector<int32_t> choose(int64_t S, int64_t k, std::vector<int32_t> pool, bool sorted) {
  std::vector<int32_t> ex(size_t(S * k));
  for (int64_t s = 0; s < S; ++s) {
    std::shuffle(pool.begin(), pool.end(), rng());
    std::copy(pool.begin(), pool.begin() + k, ex.begin() + s * k);
    if (sorted) std::sort(ex.begin() + s * k, ex.begin() + (s + 1) * k);
  }
  return ex;
}

std::vector<int32_t> first_n(int64_t E, int64_t n) {  // n random experts of E
  std::vector<int32_t> all(static_cast<size_t>(E));
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng());
  all.resize(size_t(n));
  return all;
}

struct Route {
  std::vector<int32_t> offsets, rows, pos;
  std::vector<float> row_w;
};

// CUDA route; rows / row_w are compared up to offsets[E] (entries past it are not written).
Route cuda_route(const std::vector<int32_t>& ex, const std::vector<float>& wt, int64_t S, int64_t k, int64_t E) {
  DevBuf<int32_t> de(ex), doff(size_t(E + 1)), drows(ex.size()), dpos(ex.size());
  DevBuf<float> dw(wt), drw(wt.size());
  doff.poison(), drows.poison(), dpos.poison(), drw.poison();
  moe_route({de.p, dw.p, doff.p, drows.p, drw.p, dpos.p, S, k, E}, nullptr);
  return {doff.down(), drows.down(), dpos.down(), drw.down()};
}

TEST(CudaMoe, RouteExact) {
  struct Case {
    int64_t S, k, E, used;
    bool sorted;
  };
  // Decode (8 choices), a 256-thread block, one and several 1024-choice chunks, few busy experts
  // (long runs of one id inside a warp), k = 1, shuffled orders, a prefill-sized table.
  for (Case c : {Case{1, 8, 256, 256, true}, Case{32, 8, 256, 256, true}, Case{128, 8, 256, 256, false},
                 Case{129, 8, 256, 12, true}, Case{700, 4, 16, 16, false}, Case{333, 1, 3, 3, true},
                 Case{500, 6, 256, 6, true}, Case{4096, 8, 256, 256, true}}) {
    SCOPED_TRACE(testing::Message() << c.S << "x" << c.k << " E=" << c.E << " used=" << c.used);
    const auto ex = choose(c.S, c.k, first_n(c.E, c.used), c.sorted);
    const auto wt = rand_f32(ex.size(), 0.01f, 3.0f);
    Route want{std::vector<int32_t>(size_t(c.E + 1)), std::vector<int32_t>(ex.size()),
               std::vector<int32_t>(ex.size()), std::vector<float>(ex.size())};
    R.moe_route({ex.data(), wt.data(), want.offsets.data(), want.rows.data(), want.row_w.data(), want.pos.data(), c.S,
                 c.k, c.E});
    const Route got = cuda_route(ex, wt, c.S, c.k, c.E);
    EXPECT_EQ(got.offsets, want.offsets);
    EXPECT_EQ(got.rows, want.rows);
    EXPECT_EQ(got.pos, want.pos);
    EXPECT_EQ(0, std::memcmp(got.row_w.data(), want.row_w.data(), wt.size() * 4));
  }
}

TEST(CudaMoe, RouteDropsOutOfRangeIds) {
  // The reference throws on these; the kernel cannot, so it leaves them out (pos = -1).
  const int64_t S = 3, k = 2, E = 4;
  const std::vector<int32_t> ex = {1, 4, -2, 1, 0, 3};
  const std::vector<float> wt = {1, 2, 3, 4, 5, 6};
  const Route got = cuda_route(ex, wt, S, k, E);
  EXPECT_EQ(got.offsets, (std::vector<int32_t>{0, 1, 3, 3, 4}));
  EXPECT_EQ(got.pos, (std::vector<int32_t>{1, -1, -1, 2, 0, 3}));
  EXPECT_EQ(std::vector<int32_t>(got.rows.begin(), got.rows.begin() + 4), (std::vector<int32_t>{2, 0, 1, 2}));
  EXPECT_EQ(std::vector<float>(got.row_w.begin(), got.row_w.begin() + 4), (std::vector<float>{5, 1, 4, 6}));
}

TEST(CudaMoe, CombineExact) {
  struct Case {
    int64_t S, k, E, H;
    bool sorted;
    int acc_shift;  // acc starting one float in: not 8-byte aligned, scalar path
  };
  for (Case c : {Case{1, 8, 256, 7168, true, 0}, Case{45, 4, 16, 1000, false, 0}, Case{9, 4, 16, 7, true, 0},
                 Case{13, 6, 64, 258, false, 1}, Case{300, 8, 256, 512, true, 0}}) {
    SCOPED_TRACE(testing::Message() << c.S << "x" << c.k << " H=" << c.H << " shift=" << c.acc_shift);
    const auto ex = choose(c.S, c.k, first_n(c.E, std::max<int64_t>(c.k, c.E / 2)), c.sorted);
    const auto wt = rand_f32(ex.size(), -2.0f, 2.0f);
    std::vector<int32_t> off(size_t(c.E + 1)), rows(ex.size()), pos(ex.size());
    std::vector<float> rw(ex.size());
    R.moe_route({ex.data(), wt.data(), off.data(), rows.data(), rw.data(), pos.data(), c.S, c.k, c.E});
    if (c.S > 2) pos[1] = -1;  // a missing choice is skipped
    const auto y = rand_bf16(size_t(c.S * c.k * c.H), 3.0f);
    const auto acc0 = rand_f32(size_t(c.S * c.H), -5.0f, 5.0f);
    std::vector<float> want = acc0;
    R.moe_combine({want.data(), y.data(), pos.data(), rw.data(), c.S, c.k, c.H});
    std::vector<float> acc_in(size_t(c.acc_shift), 0.0f);
    acc_in.insert(acc_in.end(), acc0.begin(), acc0.end());
    DevBuf<float> dacc(acc_in), drw(rw);
    DevBuf<bf16> dy(y);
    DevBuf<int32_t> dpos(pos);
    moe_combine({dacc.p + c.acc_shift, dy.p, dpos.p, drw.p, c.S, c.k, c.H}, nullptr);
    const auto got = dacc.down();
    EXPECT_EQ(0, std::memcmp(got.data() + c.acc_shift, want.data(), want.size() * 4));
  }
}

TEST(CudaMoe, GroupedFp8Gemm) {
  // Tolerance of CudaGemm.Fp8Gemm: 2^-12 * Σ|a w| (scaled) per output + 1 bf16 ulp-ish relative.
  struct Case {
    std::vector<int32_t> sizes;  // rows per group
    int64_t N, K, ldy, extra;    // extra: R above offsets[G] (rows past offsets[G] stay unwritten)
  };
  for (const Case& c : {Case{{0, 1, 0, 3, 150, 0, 1}, 200, 512, 200, 0}, Case{{1, 1, 1, 1, 1, 1, 1, 1}, 384, 1536, 384, 0},
                        Case{{0, 0, 300, 2, 0}, 129, 208, 131, 5}, Case{{17, 0, 64, 129, 1}, 256, 2048, 264, 3},
                        Case{{0, 0, 0, 4}, 64, 128, 64, 0},
                        // few rows per group (decode kernel), one group over two 16-row tiles
                        Case{{20, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 129, 300, 131, 2}}) {
    const int64_t G = int64_t(c.sizes.size()), nb = ceil_div(c.K, 128), nbn = ceil_div(c.N, 128);
    std::vector<int32_t> off = {0};
    for (int32_t n : c.sizes) off.push_back(off.back() + n);
    const int64_t rows_used = off.back(), Rtot = rows_used + c.extra, A = rows_used + 7;
    SCOPED_TRACE(testing::Message() << "G=" << G << " rows=" << rows_used << " N=" << c.N << " K=" << c.K);
    auto a = rand_fp8(size_t(A * c.K));
    std::vector<float> as(size_t(A * nb));
    for (auto& v : as) v = std::ldexp(1.0f, int(rng()() % 8) - 10);
    std::vector<int32_t> src(static_cast<size_t>(Rtot));
    for (auto& r : src) r = int32_t(rng()() % uint32_t(A));
    std::vector<std::vector<fp8>> w;
    std::vector<std::vector<float>> ws;
    std::vector<const fp8*> hw;
    std::vector<const float*> hws;
    std::vector<std::unique_ptr<DevBuf<fp8>>> dw;
    std::vector<std::unique_ptr<DevBuf<float>>> dws;
    std::vector<const fp8*> pw;
    std::vector<const float*> pws;
    for (int64_t g = 0; g < G; ++g) {
      w.push_back(rand_fp8(size_t(c.N * c.K)));
      ws.emplace_back(size_t(nbn * nb));
      for (auto& v : ws.back()) v = std::ldexp(1.0f, int(rng()() % 8) - 10);
    }
    for (int64_t g = 0; g < G; ++g) {
      hw.push_back(w[g].data()), hws.push_back(ws[g].data());
      dw.push_back(std::make_unique<DevBuf<fp8>>(w[g]));
      dws.push_back(std::make_unique<DevBuf<float>>(ws[g]));
      pw.push_back(dw.back()->p), pws.push_back(dws.back()->p);
    }
    DevBuf<fp8> da(a);
    DevBuf<float> das(as);
    DevBuf<int32_t> doff(off), dsrc(src);
    DevBuf<const fp8*> dpw(pw);
    DevBuf<const float*> dpws(pws);
    for (int mode = 0; mode < 6; ++mode) {
      const bool gather = mode % 2 == 0;
      const int km = mode / 2;  // exact f16 wgmma, exact mma.sync, FP8 wgmma
      Fp8Mode fm(km == 2, km == 1);
      SCOPED_TRACE(std::string(gather ? "rows" : "rows == nullptr") +
                   (km == 0 ? ", f16 wgmma" : km == 1 ? ", mma.sync" : ", fp8 wgmma"));
      std::vector<bf16> y(size_t(Rtot * c.ldy), bf16{0xffff});
      R.grouped_fp8_gemm({a.data(), as.data(), gather ? src.data() : nullptr, off.data(), hw.data(), hws.data(),
                          y.data(), G, Rtot, c.N, c.K, c.ldy});
      DevBuf<bf16> dy(y.size());
      dy.poison();
      grouped_fp8_gemm({da.p, das.p, gather ? dsrc.p : nullptr, doff.p, dpw.p, dpws.p, dy.p, G, Rtot, c.N, c.K, c.ldy},
                       nullptr);
      const auto yo = dy.down();
      for (int64_t g = 0; g < G; ++g)
        for (int64_t r = off[g]; r < off[g + 1]; ++r) {
          const int64_t m = gather ? src[r] : r;
          for (int64_t n = 0; n < c.N; ++n) {
            double bound = 0;
            for (int64_t k = 0; k < c.K; ++k)
              bound += std::fabs(fp8_to_f32(a[m * c.K + k]) * fp8_to_f32(w[g][n * c.K + k])) * as[m * nb + k / 128] *
                       ws[g][(n / 128) * nb + k / 128];
            const float ref = f(y[r * c.ldy + n]), got = f(yo[r * c.ldy + n]);
            ASSERT_NEAR(got, ref, bound * std::ldexp(1.0, km == 2 ? -12 : -16) + std::fabs(ref) * std::ldexp(1.0, -7))
                << "group " << g << " row " << r << " col " << n;
          }
        }
      for (size_t i = size_t(rows_used * c.ldy); i < yo.size(); ++i)
        ASSERT_EQ(yo[i].bits, 0xffff) << "row " << i / c.ldy << " past offsets[G] was written";
    }
  }
}

}  // namespace
}  // namespace dsa::ops::cuda::test
