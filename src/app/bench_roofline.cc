// Roofline of this machine for `dsa bench`: STREAM-style triad bandwidth (multi-threaded) and
// peak FMA rate from register-blocked loops (fp32 FMA; bf16 dot products with AVX512-BF16).
#include <immintrin.h>

#include <algorithm>
#include <memory>
#include <thread>
#include <vector>

#include "app/bench.h"

namespace dsa::app::bench {

namespace {

// Runs fn(thread_id) on `threads` threads at once; returns the wall time of the slowest.
template <class F>
double run_threads(int threads, F fn) {
  const double t0 = now_s();
  std::vector<std::thread> ts;
  for (int i = 1; i < threads; ++i) ts.emplace_back(fn, i);
  fn(0);
  for (auto& t : ts) t.join();
  return now_s() - t0;
}

double triad_gbs(int threads, double seconds) {
  const int64_t n = int64_t(1) << 24;  // 3 arrays x 128 MiB of doubles, far beyond any cache
  std::unique_ptr<double[]> a(new double[size_t(n)]), b(new double[size_t(n)]), c(new double[size_t(n)]);
  auto chunk = [&](int t, auto&& body) {
    const int64_t lo = n * t / threads, hi = n * (t + 1) / threads;
    body(lo, hi);
  };
  // First touch by the owning thread (NUMA placement as in STREAM).
  run_threads(threads, [&](int t) {
    chunk(t, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) a[i] = 0.0, b[i] = 1.0, c[i] = 2.0;
    });
  });
  const double s = 3.0;
  double best = 1e30, spent = 0;
  for (int rep = 0; rep < 50 && (rep < 3 || spent < seconds); ++rep) {
    const double dt = run_threads(threads, [&](int t) {
      chunk(t, [&](int64_t lo, int64_t hi) {
        double* __restrict pa = a.get();
        const double* __restrict pb = b.get();
        const double* __restrict pc = c.get();
        for (int64_t i = lo; i < hi; ++i) pa[i] = pb[i] + s * pc[i];
      });
    });
    best = std::min(best, dt);
    spent += dt;
  }
  volatile double sink = a[size_t(n / 2)];
  (void)sink;
  return 3.0 * 8.0 * double(n) / best / 1e9;
}

constexpr int64_t kIters = 1 << 22;

__attribute__((target("avx512f"))) double fma_avx512(int64_t iters) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(float(i) * 0.001f);
  const __m512 m = _mm512_set1_ps(0.9999999f), k = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], m, k);
  __m512 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, acc[i]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return double(iters) * 12 * 16 * 2;
}

__attribute__((target("avx2,fma"))) double fma_avx2(int64_t iters) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(float(i) * 0.001f);
  const __m256 m = _mm256_set1_ps(0.9999999f), k = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], m, k);
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  volatile float sink = out[0];
  (void)sink;
  return double(iters) * 12 * 8 * 2;
}

double fma_scalar(int64_t iters) {
  float acc[8];
  for (int i = 0; i < 8; ++i) acc[i] = float(i) * 0.001f;
  for (int64_t it = 0; it < iters / 8; ++it)
    for (int i = 0; i < 8; ++i) acc[i] = acc[i] * 0.9999999f + 1e-7f;
  volatile float sink = acc[0] + acc[7];
  (void)sink;
  return double(iters / 8) * 8 * 2;
}

// vdpbf16ps: 16 lanes x 2 bf16 products summed into fp32 = 64 FLOPs per instruction.
__attribute__((target("avx512f,avx512bf16"))) double dp_bf16(int64_t iters) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_setzero_ps();
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3c00);  // bf16 2^-7
  const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3c00);
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, acc[i]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return double(iters) * 12 * 64;
}

// Best of several timed rounds of `kernel` on all threads at once, in GFLOP/s.
template <class K>
double peak(int threads, double seconds, K kernel) {
  kernel(kIters / 16);  // warm up (frequency ramp)
  double best = 0, spent = 0;
  for (int rep = 0; rep < 20 && (rep < 3 || spent < seconds); ++rep) {
    std::vector<double> flops(size_t(threads), 0.0);
    const double dt = run_threads(threads, [&](int t) { flops[size_t(t)] = kernel(kIters); });
    double f = 0;
    for (double x : flops) f += x;
    best = std::max(best, f / dt / 1e9);
    spent += dt;
  }
  return best;
}

}  // namespace

Roofline measure_roofline(int threads, double seconds) {
  Roofline r;
  r.threads = threads;
  r.triad_gbs = triad_gbs(threads, seconds / 2);
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) {
    r.isa = "avx512f";
    r.fma_f32_gflops = peak(threads, seconds / 4, fma_avx512);
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    r.isa = "avx2+fma";
    r.fma_f32_gflops = peak(threads, seconds / 4, fma_avx2);
  } else {
    r.isa = "scalar";
    r.fma_f32_gflops = peak(threads, seconds / 4, fma_scalar);
  }
  if (__builtin_cpu_supports("avx512bf16")) r.dp_bf16_gflops = peak(threads, seconds / 4, dp_bf16);
  return r;
}

}  // namespace dsa::app::bench
