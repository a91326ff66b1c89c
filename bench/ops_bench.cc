// Micro-benchmarks of the CPU ops at DeepSeek-V3.2 shapes (ref on the smaller shapes for
// comparison), with bytes/s and FLOP/s counters and a DRAM read-bandwidth roofline probe.
// Run: build/ops_bench [--benchmark_filter=...]; threads from DSA_THREADS.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "base/numeric.h"
#include "base/thread_pool.h"
#include "ops/ops.h"

namespace dsa::ops {
namespace {

std::mt19937 g_rng(42);
std::vector<fp8> rand_fp8(size_t n) {
  std::vector<fp8> v(n);
  std::uniform_int_distribution<int> d(0, 255);
  for (auto& x : v) {
    do x = fp8(d(g_rng));
    while ((x & 0x7f) == 0x7f);
  }
  return v;
}
std::vector<bf16> rand_bf16(size_t n, float sd = 1.0f) {
  std::vector<bf16> v(n);
  std::normal_distribution<float> d(0.0f, sd);
  for (auto& x : v) x = f32_to_bf16(d(g_rng));
  return v;
}
const OpTable& table(int64_t which) { return which ? cpu_ops() : ref_ops(); }
void counters(benchmark::State& st, double bytes, double flops) {
  st.counters["bytes/s"] = benchmark::Counter(bytes * double(st.iterations()),
                                              benchmark::Counter::kIsRate);
  st.counters["FLOP/s"] = benchmark::Counter(flops * double(st.iterations()),
                                             benchmark::Counter::kIsRate);
  st.counters["threads"] = global_pool().size();
}

// Roofline probe: read-only streaming sum over 512 MiB split over the pool.
void BM_DramRead(benchmark::State& st) {
  const size_t n = size_t(512) << 20 >> 3;
  std::vector<uint64_t> buf(n);
  std::iota(buf.begin(), buf.end(), 0);
  for (auto _ : st) {
    std::vector<uint64_t> part(64, 0);
    parallel_for(int64_t(64), [&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; ++c) {
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        const uint64_t* p = buf.data() + size_t(c) * (n / 64);
        for (size_t i = 0; i < n / 64; i += 4) {
          s0 += p[i];
          s1 += p[i + 1];
          s2 += p[i + 2];
          s3 += p[i + 3];
        }
        part[size_t(c)] = s0 + s1 + s2 + s3;
      }
    });
    benchmark::DoNotOptimize(part.data());
  }
  counters(st, double(n * 8), 0);
}
BENCHMARK(BM_DramRead)->Unit(benchmark::kMillisecond)->UseRealTime();

// FP8 block GEMM/GEMV: args (backend, M, N, K). Bytes = fp8 weights + scales + activations.
void BM_Fp8Gemm(benchmark::State& st) {
  const int64_t M = st.range(1), N = st.range(2), K = st.range(3), nb = ceil_div(K, kBlock);
  std::vector<bf16> x = rand_bf16(size_t(M * K));
  std::vector<fp8> a(size_t(M * K)), w = rand_fp8(size_t(N * K));
  std::vector<float> a_s(size_t(M * nb)), w_s(size_t(ceil_div(N, kBlock) * nb), 1.0f / 1024);
  ref_ops().act_quant({x.data(), a.data(), a_s.data(), M, K});
  std::vector<bf16> y(size_t(M * N));
  const OpTable& T = table(st.range(0));
  for (auto _ : st) T.fp8_gemm({a.data(), a_s.data(), w.data(), w_s.data(), y.data(), M, N, K, N});
  counters(st, double(N * K + M * K + M * N * 2), 2.0 * double(M * N * K));
}
BENCHMARK(BM_Fp8Gemm)
    ->ArgNames({"cpu", "M", "N", "K"})
    ->Args({0, 1, 2048, 7168})
    ->Args({1, 1, 2048, 7168})
    ->Args({1, 1, 18432, 7168})
    ->Args({1, 4, 2048, 7168})
    ->Args({1, 8, 7168, 2048})
    ->Args({1, 1, 7168, 18432})
    ->Args({1, 128, 2048, 7168})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Indexer logits, 1 query x 64 heads x 128 over N keys in 64-key pages (shuffled table).
void BM_IndexerLogits(benchmark::State& st) {
  const int64_t N = st.range(1), H = 64, D = 128, ps = 64, np = ceil_div(N, ps);
  IndexPages kp{nullptr, nullptr, 0, ps, D, np};
  std::vector<uint8_t> pool(size_t(np * kp.page_bytes()));
  std::vector<fp8> kb = rand_fp8(pool.size());
  std::memcpy(pool.data(), kb.data(), pool.size());
  for (int64_t p = 0; p < np; ++p)
    for (int64_t s = 0; s < ps; ++s) {
      const float ks = 0.01f;
      std::memcpy(pool.data() + p * kp.page_bytes() + ps * D + 4 * s, &ks, 4);
    }
  std::vector<int32_t> bt(static_cast<size_t>(np));
  std::iota(bt.begin(), bt.end(), 0);
  std::shuffle(bt.begin(), bt.end(), g_rng);
  kp.pool = pool.data();
  kp.block_table = bt.data();
  std::vector<fp8> q = rand_fp8(size_t(H * D));
  std::vector<float> w(size_t(H), 0.1f), out(static_cast<size_t>(N));
  const int32_t end = int32_t(N);
  const OpTable& T = table(st.range(0));
  for (auto _ : st) T.indexer_logits({q.data(), w.data(), kp, &end, out.data(), 1, H, N});
  counters(st, double(N * (D + 4)), 2.0 * double(H * D * N));
}
BENCHMARK(BM_IndexerLogits)
    ->ArgNames({"cpu", "keys"})
    ->Args({0, 4096})
    ->Args({1, 4096})
    ->Args({1, 32768})
    ->Args({1, 131072})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Top-k 2048 of N scores (one row).
void BM_TopK(benchmark::State& st) {
  const int64_t N = st.range(1), k = 2048;
  std::vector<float> sc(static_cast<size_t>(N));
  std::normal_distribution<float> d;
  for (auto& v : sc) v = d(g_rng);
  std::vector<int32_t> idx(static_cast<size_t>(k));
  const int32_t end = int32_t(N);
  const OpTable& T = table(st.range(0));
  for (auto _ : st) T.topk({sc.data(), &end, idx.data(), 1, N, k});
  counters(st, double(N * 4), 0);
}
BENCHMARK(BM_TopK)
    ->ArgNames({"cpu", "N"})
    ->Args({0, 131072})
    ->Args({1, 131072})
    ->Args({1, 32768})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Sparse MLA decode: 1 token, H heads, kv_lora 512 + rope 64, K selected of a 16K-row cache.
void BM_SparseMlaDecode(benchmark::State& st) {
  const int64_t H = st.range(1), K = st.range(2), L = 512, Rp = 64, N = 16384;
  const LatentLayout lay{L, Rp};
  std::vector<uint8_t> cache(size_t(N * lay.row_bytes()));
  for (int64_t r = 0; r < N; ++r) {
    uint8_t* row = cache.data() + r * lay.row_bytes();
    std::vector<fp8> c = rand_fp8(size_t(L));
    std::memcpy(row, c.data(), size_t(L));
    for (int64_t b = 0; b < 4; ++b) {
      const float s = 1.0f / 256;
      std::memcpy(row + lay.scale_off() + 4 * b, &s, 4);
    }
    std::vector<bf16> pe = rand_bf16(size_t(Rp));
    std::memcpy(row + lay.rope_off(), pe.data(), size_t(Rp * 2));
  }
  std::vector<int32_t> idx(static_cast<size_t>(K));
  std::uniform_int_distribution<int> d(0, int(N - 1));
  for (auto& v : idx) v = d(g_rng);
  std::vector<bf16> qa = rand_bf16(size_t(H * L), 0.1f), qp = rand_bf16(size_t(H * Rp), 0.1f);
  std::vector<bf16> o(size_t(H * L));
  const OpTable& T = table(st.range(0));
  for (auto _ : st)
    T.sparse_mla_decode({qa.data(), qp.data(), cache.data(), idx.data(), o.data(), 1, H, N, K,
                         lay, 0.0723f});
  counters(st, double(K * lay.row_bytes() + H * (L + Rp) * 2 + H * L * 2),
           2.0 * double(H * K * (L + Rp + L)));
}
BENCHMARK(BM_SparseMlaDecode)
    ->ArgNames({"cpu", "H", "K"})
    ->Args({0, 128, 2048})
    ->Args({1, 128, 2048})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Sparse MHA prefill: S queries x H heads, d_qk 192 / d_v 128, K selected of T keys.
void BM_SparseMhaPrefill(benchmark::State& st) {
  const int64_t H = st.range(1), K = st.range(2), S = st.range(3), T = st.range(4);
  const int64_t dqk = 192, dv = 128;
  std::vector<bf16> q = rand_bf16(size_t(S * H * dqk), 0.1f), k = rand_bf16(size_t(T * H * dqk));
  std::vector<bf16> v = rand_bf16(size_t(T * H * dv));
  std::vector<int32_t> idx(size_t(S * K));
  std::uniform_int_distribution<int> d(0, int(T - 1));
  for (auto& x : idx) x = d(g_rng);
  std::vector<bf16> o(size_t(S * H * dv));
  const OpTable& Tb = table(st.range(0));
  for (auto _ : st)
    Tb.sparse_mha_prefill({q.data(), k.data(), v.data(), idx.data(), o.data(), S, T, H, dqk, dv,
                           K, 0.0723f});
  counters(st, double(S * K * H * (dqk + dv) * 2), 2.0 * double(S * H * K * (dqk + dv)));
}
BENCHMARK(BM_SparseMhaPrefill)
    ->ArgNames({"cpu", "H", "K", "S", "T"})
    ->Args({1, 128, 2048, 64, 8192})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// fp32 linear (MoE gate 7168 -> 256) and per-row norms at model width.
void BM_LinearF32(benchmark::State& st) {
  const int64_t M = st.range(1), N = st.range(2), K = st.range(3);
  std::vector<float> x(size_t(M * K), 0.5f), y(size_t(M * N));
  std::vector<bf16> w = rand_bf16(size_t(N * K));
  const OpTable& T = table(st.range(0));
  for (auto _ : st) T.linear_f32({x.data(), w.data(), y.data(), M, N, K});
  counters(st, double(N * K * 2), 2.0 * double(M * N * K));
}
BENCHMARK(BM_LinearF32)
    ->ArgNames({"cpu", "M", "N", "K"})
    ->Args({0, 1, 256, 7168})
    ->Args({1, 1, 256, 7168})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

void BM_ActQuant(benchmark::State& st) {
  const int64_t M = st.range(1), K = 7168;
  std::vector<bf16> x = rand_bf16(size_t(M * K));
  std::vector<fp8> q(size_t(M * K));
  std::vector<float> s(size_t(M * K / kBlock));
  const OpTable& T = table(st.range(0));
  for (auto _ : st) T.act_quant({x.data(), q.data(), s.data(), M, K});
  counters(st, double(M * K * 3), 0);
}
BENCHMARK(BM_ActQuant)->ArgNames({"cpu", "M"})->Args({0, 64})->Args({1, 64})->UseRealTime();

}  // namespace
}  // namespace dsa::ops

BENCHMARK_MAIN();
