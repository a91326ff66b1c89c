// CUDA vs reference: indexer_logits (wgmma path, scalar fallback), top-k
// (cluster radix select at several row lengths, one-block fallback).
#include <algorithm>
#include <numeric>

#include "ops/cuda/tests/test_util.h"

namespace dsa::ops::cuda::test {
namespace {
const OpTable& R = ref_ops();

void run_indexer(int64_t S, int64_t H, int64_t D, int64_t ps, int64_t N, bool per_row_table,
                 bool misalign = false) {
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
  // misalign: pool at a 4-byte offset (no 16-byte copies: the scalar kernel runs).
  std::vector<uint8_t> padded(pool.size() + 4);
  std::copy(pool.begin(), pool.end(), padded.begin() + (misalign ? 4 : 0));
  DevBuf<uint8_t> dpool(padded);
  DevBuf<int32_t> dbt(bt), dend(end);
  DevBuf<fp8> dq(q);
  DevBuf<float> dw(w), dout(out.size());
  for (bool wg : {false, true}) {  // exact f16 wgmma kernel, then the FP8 one
    SCOPED_TRACE(wg ? "fp8 wgmma" : "exact f16 wgmma");
    Fp8Mode mode(wg);
    dout.poison();
    IndexPages dkp{dpool.p + (misalign ? 4 : 0), dbt.p, kp.bt_stride, ps, D, num_pages};
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
        // Bound: ks * Σ_h |w_h| Σ_d |q k| * 2^-12 covers wgmma's FP8 accumulation (~14 bits) and
        // the other order of the fp32 head sum (each term exact: fp8 x fp8 products fit fp32); the
        // exact kernel (f16 wgmma: exact products, fp32 accumulate) must stay within 2^-15.
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
        ASSERT_NEAR(got, ref, ks * bound * std::ldexp(1.0, wg ? -12 : -15)) << t << "," << s;
      }
    }
  }
}

TEST(CudaIndexer, TensorCoreV32Dims) { run_indexer(4, 64, 128, 64, 3000, true); }
TEST(CudaIndexer, TensorCoreIrregular) { run_indexer(3, 32, 128, 16, 333, true); }
TEST(CudaIndexer, TensorCoreManyRows) { run_indexer(14, 32, 128, 64, 20000, true); }  // stage ring
TEST(CudaIndexer, DecodeLongRow) { run_indexer(1, 64, 128, 64, 65536, true); }
TEST(CudaIndexer, BigPagesLongRing) { run_indexer(16, 64, 128, 512, 9000, true); }  // page > step
TEST(CudaIndexer, MisalignedPool) { run_indexer(3, 64, 128, 64, 5000, true, true); }
TEST(CudaIndexer, SharedTable) { run_indexer(2, 64, 128, 8, 1000, false); }
// wgmma path: fewer than 64 heads are zero-padded (any H <= 64); any page size % 4 == 0.
TEST(CudaIndexer, WgmmaFewHeads) { run_indexer(5, 16, 128, 64, 4100, true); }
TEST(CudaIndexer, WgmmaOddHeadsSmallPages) { run_indexer(4, 20, 128, 4, 777, true); }
TEST(CudaIndexer, WgmmaPagesOf12) { run_indexer(3, 64, 128, 12, 1500, false); }
TEST(CudaIndexer, WgmmaOneHead) { run_indexer(2, 1, 128, 64, 200, true); }
TEST(CudaIndexer, ScalarFallback) { run_indexer(3, 5, 40, 3, 100, true); }

// levels > 0: scores from `levels` values (many ties); 0: normal; -1: all equal; -2: mostly NaN.
void run_topk(int64_t S, int64_t N, int64_t k, int levels, std::vector<int32_t> end = {}) {
  std::vector<float> sc(size_t(S * N));
  std::uniform_int_distribution<int> lv(0, std::max(levels, 1) - 1);
  for (auto& v : sc) {
    if (levels > 0) v = float(lv(rng())) * 0.25f - 3.0f;
    else if (levels == 0) v = std::normal_distribution<float>()(rng());
    else if (levels == -1) v = 1.5f;
    else v = rng()() % 16 == 0 ? float(rng()() % 5) : std::numeric_limits<float>::quiet_NaN();
  }
  sc[5] = -std::numeric_limits<float>::infinity();
  sc[7] = std::numeric_limits<float>::quiet_NaN();
  sc[9] = -0.0f;
  if (end.empty()) {
    end.resize(size_t(S));
    for (int64_t t = 0; t < S; ++t)
      end[size_t(t)] = int32_t(t == 0 ? N : t == 1 ? std::min<int64_t>(N, k / 2) : rng()() % (N + 1));
  }
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
// Cluster path: one 128K row (8 CTAs x 16 keys per thread), the decode shape.
TEST(CudaTopK, OneRow128K) { run_topk(1, 131072, 2048, 0, {131072}); }
TEST(CudaTopK, OneRow128KTies) { run_topk(1, 131072, 2048, 40, {131072}); }
TEST(CudaTopK, AllEqual) { run_topk(3, 131072, 2048, -1, {131072, 100000, 2049}); }
TEST(CudaTopK, MostlyNaN) { run_topk(3, 70000, 2048, -2, {70000, 30000, 1000}); }
TEST(CudaTopK, EndBelowK) { run_topk(4, 20000, 2048, 0, {0, 1, 2047, 2048}); }
TEST(CudaTopK, SeveralRowsMixedEnds) { run_topk(9, 40000, 2048, 0); }  // 5 CTAs per row
TEST(CudaTopK, ShortRows) { run_topk(6, 4096, 2048, 0); }              // one CTA per row
TEST(CudaTopK, LongRows200K) { run_topk(2, 200000, 2048, 11); }        // 28 keys per thread
TEST(CudaTopK, VeryLongRowFallback) { run_topk(2, 300000, 2048, 0); }  // one-block kernel
TEST(CudaTopK, OddRowLength) { run_topk(3, 65537, 1000, 0); }          // unaligned rows

}  // namespace
}  // namespace dsa::ops::cuda::test
