// Kernel benchmarks at DeepSeek-V3.2 dims on one GPU: copy bandwidth, indexer logits, top-k, sparse
// MLA decode, one attention layer, fp8 GEMM. CUDA events, L2 flushed, median. CSV to argv[1].
#include <algorithm>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "ops/cuda/cuda_ops.h"

using namespace dsa;
using namespace dsa::ops;
namespace cu = dsa::ops::cuda;

namespace {
FILE* csv = stdout;
void* g_flush = nullptr;  // 256 MiB written before each timed call: inputs start outside L2
constexpr size_t kFlushBytes = size_t(256) << 20;

double time_us(const std::function<void()>& fn, int reps = 20) {
  if (!g_flush) CUDA_CHECK(cudaMalloc(&g_flush, kFlushBytes));
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) fn();
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    CUDA_CHECK(cudaMemsetAsync(g_flush, i & 255, kFlushBytes));
    CUDA_CHECK(cudaEventRecord(a));
    fn();
    CUDA_CHECK(cudaEventRecord(b));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1e3);
  }
  std::sort(t.begin(), t.end());
  CUDA_CHECK(cudaEventDestroy(a));
  CUDA_CHECK(cudaEventDestroy(b));
  return t[t.size() / 2];
}

void row(const std::string& kernel, const std::string& shape, double us, const char* metric, double v) {
  std::fprintf(csv, "%s,%s,%.2f,%s,%.3f\n", kernel.c_str(), shape.c_str(), us, metric, v);
  std::fflush(csv);
  std::printf("%-18s %-40s %10.2f us  %s=%.3f\n", kernel.c_str(), shape.c_str(), us, metric, v);
}

template <class T>
T* dalloc(size_t n, uint8_t mask = 0x3f, uint32_t seed = 1) {
  T* p = nullptr;
  CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
  cu::fill_hash(p, n * sizeof(T), seed, mask, nullptr);
  return p;
}

void bench_copy() {
  const size_t bytes = size_t(2) << 30;
  auto* a = dalloc<uint8_t>(bytes);
  auto* b = dalloc<uint8_t>(bytes);
  const double us = time_us([&] { cu::copy_bytes(b, a, bytes, nullptr); });
  row("copy", "2GiB", us, "TB/s(r+w)", 2.0 * double(bytes) / us / 1e6);
  const double us2 = time_us([&] { CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); });
  row("cudaMemcpy", "2GiB", us2, "TB/s(r+w)", 2.0 * double(bytes) / us2 / 1e6);
  CUDA_CHECK(cudaFree(a));
  CUDA_CHECK(cudaFree(b));
}

void bench_indexer_topk() {
  {  // floor: one tiny kernel under the same timing (L2 flush before, events around)
    auto* x = dalloc<uint8_t>(16);
    const double us = time_us([&] { cu::fill_hash(x, 16, 1, 0x3f, nullptr); });
    row("tiny_kernel", "fill_hash 16B", us, "us", us);
    CUDA_CHECK(cudaFree(x));
  }
  const int64_t H = 64, D = 128, ps = 64;
  for (int64_t S : {1, 8, 32})
    for (int64_t L : {4096, 16384, 65536, 131072}) {
      const int64_t ppr = L / ps, np = S * ppr;
      auto* pool = dalloc<uint8_t>(size_t(np * ps * (D + 4)));
      std::vector<int32_t> bt(static_cast<size_t>(np));
      for (int64_t i = 0; i < np; ++i) bt[size_t(i)] = int32_t(i);
      std::shuffle(bt.begin(), bt.end(), std::mt19937(7));
      int32_t* dbt = dalloc<int32_t>(bt.size());
      CUDA_CHECK(cudaMemcpy(dbt, bt.data(), bt.size() * 4, cudaMemcpyHostToDevice));
      std::vector<int32_t> end(static_cast<size_t>(S), int32_t(L));
      int32_t* dend = dalloc<int32_t>(end.size());
      CUDA_CHECK(cudaMemcpy(dend, end.data(), end.size() * 4, cudaMemcpyHostToDevice));
      auto* q = dalloc<uint8_t>(size_t(S * H * D));
      auto* w = dalloc<float>(size_t(S * H));
      auto* out = dalloc<float>(size_t(S * L));
      IndexerLogits p{q, w, IndexPages{pool, dbt, ppr, ps, D, np}, dend, out, S, H, L};
      const double us = time_us([&] { cu::indexer_logits(p, nullptr); });
      const std::string shape = "S=" + std::to_string(S) + " ctx=" + std::to_string(L);
      row("indexer_logits", shape, us, "TB/s(keys)", double(S * L * (D + 4)) / us / 1e6);
      row("indexer_logits", shape, us, "TFLOPS", 2.0 * double(S * L * H * D) / us / 1e6);
      if (L == 131072) {
        int32_t* idx = dalloc<int32_t>(size_t(S * 2048));
        TopK tp{out, dend, idx, S, L, 2048};
        const double ut = time_us([&] { cu::topk(tp, nullptr); });
        row("topk", shape + " k=2048", ut, "GB/s(scores)", double(S * L * 4) / ut / 1e3);
        CUDA_CHECK(cudaFree(idx));
      }
      for (void* x : {(void*)pool, (void*)dbt, (void*)dend, (void*)q, (void*)w, (void*)out}) CUDA_CHECK(cudaFree(x));
    }
}

void bench_mla() {
  const int64_t H = 128, K = 2048, N = 131072;
  LatentLayout lay{512, 64};
  auto* cache = dalloc<uint8_t>(size_t(N * lay.row_bytes()));
  for (int64_t S : {1, 8, 64, 128}) {
    auto* qa = dalloc<bf16>(size_t(S * H * 512));
    auto* qp = dalloc<bf16>(size_t(S * H * 64));
    auto* o = dalloc<bf16>(size_t(S * H * 512));
    std::vector<int32_t> idx(size_t(S * K));
    std::mt19937 g(3);
    for (auto& x : idx) x = int32_t(g() % N);
    int32_t* didx = dalloc<int32_t>(idx.size());
    CUDA_CHECK(cudaMemcpy(didx, idx.data(), idx.size() * 4, cudaMemcpyHostToDevice));
    SparseMlaDecode p{qa, qp, cache, didx, o, S, H, N, K, lay, 0.0416f};
    const double us = time_us([&] { cu::sparse_mla_decode(p, nullptr); });
    row("sparse_mla_decode", "b=" + std::to_string(S) + " h=128 topk=2048", us, "TFLOPS",
        2.0 * double(S * H * K * (576 + 512)) / us / 1e6);
    for (void* x : {(void*)qa, (void*)qp, (void*)o, (void*)didx}) CUDA_CHECK(cudaFree(x));
  }
  CUDA_CHECK(cudaFree(cache));
}

// One attention layer at batch S (one query token per sequence, context ctx): indexer logits over
// the paged index keys, top-2048, fused sparse MLA decode over the selected latent rows. The top-k
// positions index a latent pool of ctx rows shared by the batch (no logical->physical mapping).
void bench_layer() {
  const int64_t H = 64, D = 128, ps = 64, K = 2048, Hq = 128;
  LatentLayout lay{512, 64};
  std::printf("\nlayer (indexer + top-k + sparse MLA), us: ctx x batch\n%-8s", "ctx");
  for (int64_t S : {1, 8, 64, 128}) std::printf("   b=%-4lld idx/topk/mla/total", (long long)S);
  std::printf("\n");
  for (int64_t L : {4096, 16384, 65536, 131072}) {
    std::printf("%-8lld", (long long)L);
    for (int64_t S : {1, 8, 64, 128}) {
      const int64_t ppr = L / ps, np = S * ppr;
      auto* pool = dalloc<uint8_t>(size_t(np * ps * (D + 4)));
      std::vector<int32_t> bt(static_cast<size_t>(np));
      for (int64_t i = 0; i < np; ++i) bt[size_t(i)] = int32_t(i);
      std::shuffle(bt.begin(), bt.end(), std::mt19937(7));
      int32_t* dbt = dalloc<int32_t>(bt.size());
      CUDA_CHECK(cudaMemcpy(dbt, bt.data(), bt.size() * 4, cudaMemcpyHostToDevice));
      std::vector<int32_t> end(static_cast<size_t>(S), int32_t(L));
      int32_t* dend = dalloc<int32_t>(end.size());
      CUDA_CHECK(cudaMemcpy(dend, end.data(), end.size() * 4, cudaMemcpyHostToDevice));
      auto* q = dalloc<uint8_t>(size_t(S * H * D));
      auto* w = dalloc<float>(size_t(S * H));
      auto* sc = dalloc<float>(size_t(S * L));
      auto* idx = dalloc<int32_t>(size_t(S * K));
      auto* cache = dalloc<uint8_t>(size_t(L * lay.row_bytes()));
      auto* qa = dalloc<bf16>(size_t(S * Hq * 512));
      auto* qp = dalloc<bf16>(size_t(S * Hq * 64));
      auto* o = dalloc<bf16>(size_t(S * Hq * 512));
      IndexerLogits ip{q, w, IndexPages{pool, dbt, ppr, ps, D, np}, dend, sc, S, H, L};
      TopK tp{sc, dend, idx, S, L, K};
      SparseMlaDecode mp{qa, qp, cache, idx, o, S, Hq, L, K, lay, 0.0416f};
      const double ti = time_us([&] { cu::indexer_logits(ip, nullptr); });
      const double tt = time_us([&] { cu::topk(tp, nullptr); });
      cu::indexer_logits(ip, nullptr);
      cu::topk(tp, nullptr);
      const double tm = time_us([&] { cu::sparse_mla_decode(mp, nullptr); });
      const double tl = time_us([&] {
        cu::indexer_logits(ip, nullptr);
        cu::topk(tp, nullptr);
        cu::sparse_mla_decode(mp, nullptr);
      });
      const std::string shape = "b=" + std::to_string(S) + " ctx=" + std::to_string(L);
      std::fprintf(csv, "layer_indexer,%s,%.2f,us,%.2f\nlayer_topk,%s,%.2f,us,%.2f\n", shape.c_str(), ti,
                   ti, shape.c_str(), tt, tt);
      std::fprintf(csv, "layer_mla,%s,%.2f,us,%.2f\nlayer_total,%s,%.2f,us,%.2f\n", shape.c_str(), tm, tm,
                   shape.c_str(), tl, tl);
      std::fflush(csv);
      std::printf("   %6.1f/%6.1f/%6.1f/%7.1f", ti, tt, tm, tl);
      std::fflush(stdout);
      for (void* x : {(void*)pool, (void*)dbt, (void*)dend, (void*)q, (void*)w, (void*)sc, (void*)idx,
                      (void*)cache, (void*)qa, (void*)qp, (void*)o})
        CUDA_CHECK(cudaFree(x));
    }
    std::printf("\n");
  }
}

void bench_gemm() {
  struct G { int64_t M, N, K; const char* what; };
  for (G s : {G{128, 24576, 1536, "wq_b"}, G{4096, 24576, 1536, "wq_b"}, G{4096, 7168, 16384, "wo"},
              G{4096, 2048, 7168, "expert_w1"}, G{128, 2048, 7168, "expert_w1"}}) {
    auto* a = dalloc<uint8_t>(size_t(s.M * s.K), 0x77);
    auto* w = dalloc<uint8_t>(size_t(s.N * s.K), 0x77, 2);
    const int64_t nb = (s.K + 127) / 128;
    auto* as = dalloc<float>(size_t(s.M * nb));
    auto* ws = dalloc<float>(size_t((s.N + 127) / 128 * nb));
    auto* y = dalloc<bf16>(size_t(s.M * s.N));
    Fp8Gemm p{a, as, w, ws, y, s.M, s.N, s.K, s.N};
    const double us = time_us([&] { cu::fp8_gemm(p, nullptr); }, 10);
    row("fp8_gemm", std::string(s.what) + " " + std::to_string(s.M) + "x" + std::to_string(s.N) + "x" +
        std::to_string(s.K), us, "TFLOPS", 2.0 * double(s.M * s.N * s.K) / us / 1e6);
    for (void* x : {(void*)a, (void*)w, (void*)as, (void*)ws, (void*)y}) CUDA_CHECK(cudaFree(x));
  }
}
}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) csv = std::fopen(argv[1], "w");
  if (!csv) return 1;
  std::fprintf(csv, "kernel,shape,us,metric,value\n");
  try {
    // argv[2]: comma list of sections (copy,idx,mla,layer,gemm); default all.
    const std::string only = argc > 2 ? argv[2] : "copy,idx,mla,layer,gemm";
    auto on = [&](const char* w) { return only.find(w) != std::string::npos; };
    if (on("copy")) bench_copy();
    if (on("idx")) bench_indexer_topk();
    if (on("mla")) bench_mla();
    if (on("layer")) bench_layer();
    if (on("gemm")) bench_gemm();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench failed: %s\n", e.what());
    return 1;
  }
  return 0;
}
