// CUDA vs reference: indexer_logits (staged and unstaged tensor-core paths, scalar fallback), top-k.
#include <algorithm>
#include <numeric>

#include "ops/cuda/tests/test_util.h"

namespace dsa::ops::cuda::test {
namespace {
const OpTable& R = ref_ops();

void run_indexer(int64_t S, int64_t H, int64_t D, int64_t ps, int64_t N, bool per_row_table) {
  const int64_t pages_per_row = ceil_div(N, ps), rows_t = per_row_table ? S : 1;
  const int64_t num_pages = pages_per_row * rows_t + 3, pb = ps * (D + 4);
  std::vector<uint8_t> pool(size_t(num_pages * pb));
  for (int64_t pg = 0; pg < num_pages; ++pg) {
    auto k = rand_fp8(size_t(ps * D));
    std::copy(k.begin(), k.end(), pool.begin() + pg * pb);
    for (int64_t s = 0; s < ps; ++s) {
      const float sc = std::ldexp(1.0f, int(rng()() % 6) - 8);
      std::memcpy(&pool[size_t(pg * pb + ps * D + 4 * s)], &sc, 4);
    }
  }
  std::vector<int32_t> bt(size_t(rows_t * pages_per_row));
  std::iota(bt.begin(), bt.end(), 2);
  std::shuffle(bt.begin(), bt.end(), rng());
  auto q = rand_fp8(size_t(S * H * D));
  auto w = rand_f32(size_t(S * H), -1, 1);
  std::vector<int32_t> end(static_cast<size_t>(S));
  for (int64_t t = 0; t < S; ++t) end[size_t(t)] = int32_t(t == 0 ? N : (rng()() % (N + 1)));
  std::vector<float> out(size_t(S * N));
  IndexPages kp{pool.data(), bt.data(), per_row_table ? pages_per_row : 0, ps, D, num_pages};
  R.indexer_logits({q.data(), w.data(), kp, end.data(), out.data(), S, H, N});
  DevBuf<uint8_t> dpool(pool);
  DevBuf<int32_t> dbt(bt), dend(end);
  DevBuf<fp8> dq(q);
  DevBuf<float> dw(w), dout(out.size());
  dout.poison();
  IndexPages dkp{dpool.p, dbt.p, kp.bt_stride, ps, D, num_pages};
  indexer_logits({dq.p, dw.p, dkp, dend.p, dout.p, S, H, N}, nullptr);
  auto o = dout.down();
  for (int64_t t = 0; t < S; ++t) {
    const int32_t* btr = bt.data() + t * kp.bt_stride;
    for (int64_t s = 0; s < N; ++s) {
      const float ref = out[size_t(t * N + s)], got = o[size_t(t * N + s)];
      if (s >= end[size_t(t)]) {
        ASSERT_TRUE(std::isinf(got) && got < 0) << t << "," << s;
        continue;
      }
      // Bound: ks * Σ_h |w_h| Σ_d |q k| * 2^-12 covers MMA-internal accumulation and the other
      // order of the fp32 head sum (each term exact: fp8 x fp8 products fit fp32).
      const uint8_t* pg = pool.data() + int64_t(btr[s / ps]) * pb;
      float ks;
      std::memcpy(&ks, pg + ps * D + 4 * (s % ps), 4);
      double bound = 0;
      for (int64_t h = 0; h < H; ++h) {
        double dd = 0;
        for (int64_t d = 0; d < D; ++d)
          dd += std::fabs(fp8_to_f32(q[size_t((t * H + h) * D + d)]) * fp8_to_f32(pg[(s % ps) * D + d]));
        bound += std::fabs(w[size_t(t * H + h)]) * dd;
      }
      ASSERT_NEAR(got, ref, ks * bound * std::ldexp(1.0, -12)) << t << "," << s;
    }
  }
}

TEST(CudaIndexer, TensorCoreV32Dims) { run_indexer(4, 64, 128, 64, 3000, true); }
TEST(CudaIndexer, TensorCoreIrregular) { run_indexer(3, 32, 128, 16, 333, true); }
TEST(CudaIndexer, TensorCoreManyRows) { run_indexer(14, 32, 128, 64, 20000, true); }  // unstaged
TEST(CudaIndexer, SharedTable) { run_indexer(2, 64, 128, 8, 1000, false); }
TEST(CudaIndexer, ScalarFallback) { run_indexer(3, 5, 40, 3, 100, true); }

void run_topk(int64_t S, int64_t N, int64_t k, int levels) {
  std::vector<float> sc(size_t(S * N));
  std::uniform_int_distribution<int> lv(0, levels - 1);
  for (auto& v : sc) v = levels > 0 ? float(lv(rng())) * 0.25f - 3.0f : std::normal_distribution<float>()(rng());
  sc[5] = -std::numeric_limits<float>::infinity();
  sc[7] = std::numeric_limits<float>::quiet_NaN();
  sc[9] = -0.0f;
  std::vector<int32_t> end(static_cast<size_t>(S));
  for (int64_t t = 0; t < S; ++t)
    end[size_t(t)] = int32_t(t == 0 ? N : t == 1 ? std::min<int64_t>(N, k / 2) : rng()() % (N + 1));
  std::vector<int32_t> idx(size_t(S * k));
  R.topk({sc.data(), end.data(), idx.data(), S, N, k});
  DevBuf<float> ds(sc);
  DevBuf<int32_t> de(end), di(idx.size());
  di.poison();
  CUDA_CHECK(cudaMemset(di.p, 0x7f, idx.size() * 4));
  topk({ds.p, de.p, di.p, S, N, k}, nullptr);
  // Same tie rule as the reference (lower index wins at the k-th value): exact equality.
  EXPECT_EQ(di.down(), idx);
}

TEST(CudaTopK, V32Dims128K) { run_topk(2, 131072, 2048, 0); }
TEST(CudaTopK, ManyTies) { run_topk(4, 50000, 2048, 7); }
TEST(CudaTopK, Irregular) { run_topk(5, 3001, 100, 0); }
TEST(CudaTopK, SmallKTies) { run_topk(3, 777, 5, 3); }

}  // namespace
}  // namespace dsa::ops::cuda::test
