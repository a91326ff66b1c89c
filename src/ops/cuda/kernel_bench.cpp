// Kernel sweep of the CUDA backend at DeepSeek-V3.2 dims (see kernel_bench.h): indexer logits,
// top-k, sparse MLA decode, one attention layer, sparse MHA prefill and fp8 GEMM, each against
// the GPU roofline of roofline.cu. Host code; every op is called through cuda_ops.h.
#include "ops/cuda/kernel_bench.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>

#include "base/error.h"
#include "ops/cuda/cuda_ops.h"

namespace dsa::ops::cuda {

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  CUDA_CHECK(cudaMalloc(&p_, std::max<size_t>(bytes, 256)));
}
DeviceBuffer::~DeviceBuffer() {
  if (p_) cudaFree(p_);  // no throw from a destructor; a sticky error was reported already
}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (p_) cudaFree(p_);
    p_ = o.p_, bytes_ = o.bytes_;
    o.p_ = nullptr, o.bytes_ = 0;
  }
  return *this;
}

Timing time_calls(const std::function<void()>& fn, const TimingOptions& t) {
  struct Event {
    cudaEvent_t e = nullptr;
    Event() { CUDA_CHECK(cudaEventCreate(&e)); }
    ~Event() { cudaEventDestroy(e); }
  } a, b;
  int call = 0;
  auto once = [&] {
    if (t.flush) CUDA_CHECK(cudaMemsetAsync(t.flush, call & 255, t.flush_bytes, nullptr));
    ++call;
    CUDA_CHECK(cudaEventRecord(a.e, nullptr));
    fn();
    CUDA_CHECK(cudaEventRecord(b.e, nullptr));
    CUDA_CHECK(cudaEventSynchronize(b.e));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a.e, b.e));
    return double(ms) * 1e3;
  };
  fn();  // lazy module loading, workspace growth
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> us{once()};
  const double first = us[0];
  const int reps = std::max(t.reps, 1);
  int n = reps;
  if (first * 1e-6 * reps > t.budget_s)
    n = std::clamp(int(t.budget_s / (first * 1e-6)), std::min(3, reps), reps);
  if (first > 2e6) n = 1;
  if (first < 1000) {  // short calls: two more warm-up calls, then measure afresh
    fn();
    fn();
    CUDA_CHECK(cudaDeviceSynchronize());
    us.clear();
  }
  while (int(us.size()) < n) us.push_back(once());
  std::sort(us.begin(), us.end());
  const size_t m = us.size();
  Timing r;
  r.median_us = m % 2 ? us[m / 2] : 0.5 * (us[m / 2 - 1] + us[m / 2]);
  r.best_us = us[0];
  r.reps = int(m);
  return r;
}

const std::vector<std::string>& kernel_bench_sections() {
  static const std::vector<std::string> s = {"roofline", "floor", "mla", "indexer", "topk", "layer", "prefill", "gemm"};
  return s;
}

namespace {

// DeepSeek-V3.2 dims.
constexpr int64_t kIdxHeads = 64, kIdxDim = 128, kPage = 64;  // indexer; 132-byte key rows
constexpr int64_t kHeads = 128, kLora = 512, kRope = 64, kTopK = 2048;
constexpr int64_t kQkNope = 128, kVDim = 128;  // MHA prefill: d_qk = 128 + 64 rope, d_v = 128
constexpr float kMlaScale = 0.0416f, kMhaScale = 0.0722f;  // ~ 1/sqrt(576), 1/sqrt(192)
constexpr size_t kFlushBytes = size_t(256) << 20;
constexpr size_t kFreeMargin = size_t(1) << 30;  // kept free beyond a shape's buffers

// n = prod(dims) * elem, with overflow and sign checks (sizes come from user-given batches).
size_t bytes_of(std::initializer_list<int64_t> dims, size_t elem) {
  uint64_t n = elem;
  for (int64_t d : dims) {
    DSA_CHECK(d >= 0, "negative dimension {}", d);
    DSA_CHECK(!__builtin_mul_overflow(n, uint64_t(d), &n), "buffer size overflows");
  }
  return size_t(n);
}

DeviceBuffer random_buffer(size_t bytes, uint8_t mask, uint32_t seed) {
  DeviceBuffer b(bytes);
  fill_hash(b.get(), bytes, seed, mask, nullptr);
  return b;
}

// A latent cache of `rows` 656-byte rows: random finite FP8 codes and bf16 RoPE parts, and
// power-of-two block scales as the quantiser writes them (ue8m0; sparse_mla_decode's fast dequant
// relies on that — random scale bits would time its fp32 fallback instead).
DeviceBuffer latent_cache(int64_t rows, const LatentLayout& lay, uint32_t seed) {
  DeviceBuffer b = random_buffer(bytes_of({rows, lay.row_bytes()}, 1), 0x3f, seed);
  const int64_t nsb = ceil_div(lay.kv_lora, kBlock);
  std::vector<float> sc(static_cast<size_t>(rows * nsb));
  for (size_t i = 0; i < sc.size(); ++i) sc[i] = std::ldexp(1.0f, -8 - int((i * 2654435761u + seed) % 4));
  CUDA_CHECK(cudaMemcpy2D(static_cast<uint8_t*>(b.get()) + lay.scale_off(), size_t(lay.row_bytes()), sc.data(),
                          size_t(nsb) * 4, size_t(nsb) * 4, size_t(rows), cudaMemcpyHostToDevice));
  return b;
}

DeviceBuffer upload(const std::vector<int32_t>& v) {
  DeviceBuffer b(v.size() * sizeof(int32_t));
  CUDA_CHECK(cudaMemcpy(b.get(), v.data(), v.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
  return b;
}

// Per row r: min(K, visible(r)) random positions in [0, visible(r)), sorted ascending as top-k
// returns them, then -1 padding to K. Returns the number of valid entries through `valid`.
template <class Visible>
std::vector<int32_t> random_selection(int64_t rows, int64_t K, Visible visible, uint32_t seed, int64_t* valid) {
  std::vector<int32_t> idx(bytes_of({rows, K}, 1), -1);  // rows * K elements, overflow-checked
  std::mt19937 g(seed);
  int64_t n = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t vis = visible(r), take = std::min(K, vis);
    int32_t* row = idx.data() + r * K;
    for (int64_t j = 0; j < take; ++j) row[j] = int32_t(vis <= K ? j : int64_t(g() % uint64_t(vis)));
    std::sort(row, row + take);
    n += take;
  }
  if (valid) *valid = n;
  return idx;
}

std::string ctx_label(int64_t c) { return c % 1024 == 0 ? fmt::format("{}K", c / 1024) : fmt::format("{}", c); }

double pct(double v, double peak) { return peak > 0 ? 100.0 * v / peak : 0.0; }

class Sweep {
 public:
  Sweep(const KernelBenchOptions& o, std::vector<KernelBenchRow>& rows)
      : o_(o), rows_(rows), flush_(kFlushBytes), timing_(o.timing) {
    timing_.flush = flush_.get();
    timing_.flush_bytes = kFlushBytes;
  }

  void run(const std::string& s) {
    if (s == "floor") floor();
    if (s == "mla") mla();
    if (s == "indexer") layer_grid(true, false, false);
    if (s == "topk") layer_grid(false, true, false);
    if (s == "layer") layer_grid(false, false, true);
    if (s == "prefill") prefill();
    if (s == "gemm") gemm();
  }
  void emit(KernelBenchRow r) {
    if (o_.on_row) o_.on_row(r);
    rows_.push_back(std::move(r));
  }

 private:
  const GpuRoofline& roof() const {
    static const GpuRoofline none;
    return o_.roof ? *o_.roof : none;
  }
  Timing time(const std::function<void()>& fn) { return time_calls(fn, timing_); }

  // Adds `name` = 100 * v / peak when the peak is known.
  static void add_pct(KernelBenchRow& r, const char* name, double v, double peak) {
    if (peak > 0) r.metrics.push_back({name, pct(v, peak)});
  }

  // False (and a "skipped" row) when `bytes` more would not leave kFreeMargin of device memory.
  bool fits(size_t bytes, const std::string& kernel, const std::string& shape, int64_t batch, int64_t ctx) {
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    if (free_b > kFreeMargin && bytes <= free_b - kFreeMargin) return true;
    emit({kernel, shape, batch, ctx, 0, 0, {},
          fmt::format("skipped: needs {:.2f} GiB, {:.2f} GiB free", double(bytes) / (1 << 30), double(free_b) / (1 << 30))});
    return false;
  }

  KernelBenchRow row(const char* kernel, std::string shape, int64_t batch, int64_t ctx, const Timing& t) {
    return {kernel, std::move(shape), batch, ctx, t.median_us, t.reps, {}, ""};
  }

  // The floor inside every figure: launch + event overhead of one small kernel. The second row
  // is the 1024-block fill_hash that earlier cuda_bench runs reported as their floor.
  void floor() {
    const Timing te = time([] { launch_empty_kernel(); });
    KernelBenchRow r = row("tiny_kernel", "empty kernel, 1 x 32 threads", 0, 0, te);
    r.metrics.push_back({"best_us", te.best_us});
    emit(std::move(r));
    DeviceBuffer x(256);
    const Timing tf = time([&] { fill_hash(x.get(), 16, 1, 0x3f, nullptr); });
    r = row("tiny_kernel", "fill_hash 16 B, 1024 x 256 thr", 0, 0, tf);
    r.metrics.push_back({"best_us", tf.best_us});
    emit(std::move(r));
  }

  // Sparse MLA decode alone: random sorted top-k rows of a 128K-row latent cache.
  void mla() {
    const int64_t N = 131072;
    const LatentLayout lay{kLora, kRope};
    DeviceBuffer cache = latent_cache(N, lay, 11);
    for (int64_t S : o_.batches) {
      const std::string shape = fmt::format("b={} h={} topk={} N={}", S, kHeads, kTopK, ctx_label(N));
      const size_t q_b = bytes_of({S, kHeads, kLora}, 2), qp_b = bytes_of({S, kHeads, kRope}, 2);
      if (!fits(2 * q_b + qp_b + bytes_of({S, kTopK}, 4), "sparse_mla_decode", shape, S, 0)) continue;
      DeviceBuffer qa = random_buffer(q_b, 0x3f, 12), qp = random_buffer(qp_b, 0x3f, 13), out(q_b);
      DeviceBuffer idx = upload(random_selection(S, kTopK, [&](int64_t) { return N; }, 3, nullptr));
      const SparseMlaDecode p{qa.as<bf16>(), qp.as<bf16>(), cache.as<uint8_t>(), idx.as<int32_t>(), out.as<bf16>(),
                              S, kHeads, N, kTopK, lay, kMlaScale};
      const Timing t = time([&] { sparse_mla_decode(p, nullptr); });
      KernelBenchRow r = row("sparse_mla_decode", shape, S, 0, t);
      const double tflops = 2.0 * double(S) * kHeads * kTopK * (kLora + kRope + kLora) / t.median_us / 1e6;
      r.metrics.push_back({"TFLOPS", tflops});
      add_pct(r, "%mma_bf16", tflops, roof().mma_bf16);
      add_pct(r, "%bf16_sheet", tflops, roof().sheet_bf16);
      r.metrics.push_back({"TB/s", double(S) * kTopK * double(lay.row_bytes()) / t.median_us / 1e6});
      emit(std::move(r));
    }
  }

  // The grid contexts x batches of one decode step (one query token per sequence): each sequence
  // has its own ctx keys in shuffled index pages; top-k positions index a latent cache of ctx rows
  // shared by the batch (physical = logical). One pass per section keeps each section's rows
  // together in the output; parts of the layer are timed again by "layer".
  void layer_grid(bool want_indexer, bool want_topk, bool want_layer) {
    const LatentLayout lay{kLora, kRope};
    for (int64_t L : o_.contexts)
      for (int64_t S : o_.batches) {
        const std::string shape = fmt::format("b={} ctx={}", S, ctx_label(L));
        const char* kernel = want_indexer ? "indexer_logits" : want_topk ? "topk" : "layer";
        DSA_CHECK(L > 0 && S > 0, "bad shape {}", shape);
        const int64_t ppr = ceil_div(L, kPage), np = S * ppr;
        DSA_CHECK(np < (int64_t(1) << 31), "{}: too many index pages for int32 page ids", shape);
        const size_t pool_b = bytes_of({np, kPage, kIdxDim + 4}, 1), sc_b = bytes_of({S, L}, 4);
        const size_t need = pool_b + bytes_of({np}, 4) + bytes_of({S}, 4) + bytes_of({S, kIdxHeads, kIdxDim}, 1) +
                            bytes_of({S, kIdxHeads}, 4) + sc_b + bytes_of({S, kTopK}, 4) +
                            (want_layer ? bytes_of({L, lay.row_bytes()}, 1) + bytes_of({S, kHeads, 2 * kLora + kRope}, 2)
                                        : 0);
        if (!fits(need, kernel, shape, S, L)) continue;
        DeviceBuffer pool = random_buffer(pool_b, 0x3f, 21);
        std::vector<int32_t> pages(size_t(np), 0);
        for (int64_t i = 0; i < np; ++i) pages[size_t(i)] = int32_t(i);
        std::shuffle(pages.begin(), pages.end(), std::mt19937(7));
        DeviceBuffer bt = upload(pages);
        DeviceBuffer end = upload(std::vector<int32_t>(size_t(S), int32_t(L)));
        DeviceBuffer q = random_buffer(bytes_of({S, kIdxHeads, kIdxDim}, 1), 0x3f, 22);
        DeviceBuffer w = random_buffer(bytes_of({S, kIdxHeads}, 4), 0x3f, 23);
        DeviceBuffer sc(sc_b), idx(bytes_of({S, kTopK}, 4));
        const IndexerLogits ip{q.as<uint8_t>(), w.as<float>(), IndexPages{pool.as<uint8_t>(), bt.as<int32_t>(), ppr, kPage,
                                                                          kIdxDim, np},
                               end.as<int32_t>(), sc.as<float>(), S, kIdxHeads, L};
        const TopK tp{sc.as<float>(), end.as<int32_t>(), idx.as<int32_t>(), S, L, kTopK};
        indexer_logits(ip, nullptr);  // scores and a selection exist before anything is timed
        topk(tp, nullptr);
        CUDA_CHECK(cudaDeviceSynchronize());
        if (want_indexer) {
          const Timing t = time([&] { indexer_logits(ip, nullptr); });
          KernelBenchRow r = row("indexer_logits", shape, S, L, t);
          const double tbs = double(S) * double(L) * (kIdxDim + 4) / t.median_us / 1e6;
          const double tflops = 2.0 * double(S) * double(L) * kIdxHeads * kIdxDim / t.median_us / 1e6;
          r.metrics = {{"TB/s", tbs}, {"TFLOPS", tflops}};
          add_pct(r, "%HBM_meas", tbs, roof().read_tbs);
          add_pct(r, "%HBM_sheet", tbs, roof().sheet_tbs);
          add_pct(r, "%mma_f16", tflops, roof().mma_f16);
          emit(std::move(r));
        }
        if (want_topk) {
          const Timing t = time([&] { topk(tp, nullptr); });
          KernelBenchRow r = row("topk", shape + fmt::format(" k={}", kTopK), S, L, t);
          const double tbs = double(sc_b) / t.median_us / 1e6;
          r.metrics = {{"GB/s", 1e3 * tbs}};
          add_pct(r, "%HBM_meas", tbs, roof().read_tbs);
          emit(std::move(r));
        }
        if (!want_layer) continue;
        DeviceBuffer cache = latent_cache(L, lay, 24);
        DeviceBuffer qa = random_buffer(bytes_of({S, kHeads, kLora}, 2), 0x3f, 25);
        DeviceBuffer qp = random_buffer(bytes_of({S, kHeads, kRope}, 2), 0x3f, 26);
        DeviceBuffer out(bytes_of({S, kHeads, kLora}, 2));
        const SparseMlaDecode mp{qa.as<bf16>(), qp.as<bf16>(), cache.as<uint8_t>(), idx.as<int32_t>(), out.as<bf16>(),
                                 S, kHeads, L, kTopK, lay, kMlaScale};
        const Timing ti = time([&] { indexer_logits(ip, nullptr); });
        const Timing tt = time([&] { topk(tp, nullptr); });
        const Timing tm = time([&] { sparse_mla_decode(mp, nullptr); });
        const Timing tl = time([&] {
          indexer_logits(ip, nullptr);
          topk(tp, nullptr);
          sparse_mla_decode(mp, nullptr);
        });
        KernelBenchRow r = row("layer", shape, S, L, tl);
        r.metrics = {{"indexer_us", ti.median_us}, {"topk_us", tt.median_us}, {"mla_us", tm.median_us},
                     {"parts_us", ti.median_us + tt.median_us + tm.median_us}};
        emit(std::move(r));
      }
  }

  // Sparse MHA prefill: the last T - S .. T - 1 positions of a T-token context attend to 2048
  // random keys of their causal window each (sorted, as top-k returns them).
  void prefill() {
    const int64_t S = o_.prefill_tokens, T = o_.prefill_context, H = kHeads, dqk = kQkNope + kRope, dv = kVDim;
    DSA_CHECK(S > 0 && T >= S, "prefill: need 0 < tokens <= context (got {} and {})", S, T);
    const int64_t K = std::min(kTopK, T);
    const std::string shape = fmt::format("S={} ctx={} h={} topk={}", S, ctx_label(T), H, K);
    const size_t q_b = bytes_of({S, H, dqk}, 2), k_b = bytes_of({T, H, dqk}, 2), v_b = bytes_of({T, H, dv}, 2),
                 o_b = bytes_of({S, H, dv}, 2), i_b = bytes_of({S, K}, 4);
    if (!fits(q_b + k_b + v_b + o_b + i_b, "sparse_mha_prefill", shape, S, T)) return;
    int64_t valid = 0;
    DeviceBuffer idx = upload(random_selection(S, K, [&](int64_t i) { return T - S + i + 1; }, 5, &valid));
    DeviceBuffer q = random_buffer(q_b, 0x3f, 31), k = random_buffer(k_b, 0x3f, 32), v = random_buffer(v_b, 0x3f, 33);
    DeviceBuffer out(o_b);
    const SparseMhaPrefill p{q.as<bf16>(), k.as<bf16>(), v.as<bf16>(), idx.as<int32_t>(), out.as<bf16>(),
                             S, T, H, dqk, dv, K, kMhaScale};
    TimingOptions t = timing_;
    t.budget_s = std::max(t.budget_s, 1.0);
    const Timing tm = time_calls([&] { sparse_mha_prefill(p, nullptr); }, t);
    KernelBenchRow r = row("sparse_mha_prefill", shape, S, T, tm);
    const double tflops = 2.0 * double(valid) * H * double(dqk + dv) / tm.median_us / 1e6;
    r.metrics.push_back({"TFLOPS", tflops});
    add_pct(r, "%mma_bf16", tflops, roof().mma_bf16);
    add_pct(r, "%bf16_sheet", tflops, roof().sheet_bf16);
    emit(std::move(r));
    mla_prefill(S, T);  // and FlashMLA's other two contexts
    for (int64_t ctx : {int64_t(32768), int64_t(131072)})
      if (ctx > T) mla_prefill(S, ctx);
  }

  // Absorbed (MQA-mode) sparse prefill, the computation of FlashMLA's sparse prefill kernel: the
  // same S queries and causal windows through sparse_mla_decode (FP8 latent cache of T rows, the
  // warp-specialised decode kernel with S x 2 head-group CTAs). FLOPs as FlashMLA counts them.
  void mla_prefill(int64_t S, int64_t T) {
    const int64_t H = kHeads, K = std::min(kTopK, T);
    const LatentLayout lay{kLora, kRope};
    const std::string shape = fmt::format("S={} ctx={} h={} topk={}", S, ctx_label(T), H, K);
    const size_t q_b = bytes_of({S, H, kLora}, 2), qp_b = bytes_of({S, H, kRope}, 2), i_b = bytes_of({S, K}, 4);
    if (!fits(2 * q_b + qp_b + i_b + bytes_of({T, lay.row_bytes()}, 1), "sparse_mla_prefill", shape, S, T)) return;
    int64_t valid = 0;
    DeviceBuffer idx = upload(random_selection(S, K, [&](int64_t i) { return T - S + i + 1; }, 6, &valid));
    DeviceBuffer cache = latent_cache(T, lay, 34);
    DeviceBuffer qa = random_buffer(q_b, 0x3f, 35), qp = random_buffer(qp_b, 0x3f, 36), out(q_b);
    const SparseMlaDecode p{qa.as<bf16>(), qp.as<bf16>(), cache.as<uint8_t>(), idx.as<int32_t>(), out.as<bf16>(),
                            S, H, T, K, lay, kMlaScale};
    const Timing tm = time([&] { sparse_mla_decode(p, nullptr); });
    KernelBenchRow r = row("sparse_mla_prefill", shape, S, T, tm);
    const double tflops = 2.0 * double(valid) * H * double(kLora + kRope + kLora) / tm.median_us / 1e6;
    r.metrics.push_back({"TFLOPS", tflops});
    add_pct(r, "%mma_bf16", tflops, roof().mma_bf16);
    add_pct(r, "%bf16_sheet", tflops, roof().sheet_bf16);
    emit(std::move(r));
  }

  void gemm() {
    struct G {
      int64_t M, N, K;
      const char* what;
    };
    // Decode (M = 1, 8: memory-bound, TB/s of weights counts) and prefill shapes.
    for (G s : {G{1, 24576, 1536, "wq_b"}, G{1, 7168, 16384, "wo"}, G{8, 7168, 16384, "wo"},
                G{1, 2048, 7168, "expert_w1"}, G{128, 24576, 1536, "wq_b"}, G{4096, 24576, 1536, "wq_b"},
                G{4096, 7168, 16384, "wo"}, G{4096, 2048, 7168, "expert_w1"}, G{128, 2048, 7168, "expert_w1"}}) {
      const std::string shape = fmt::format("{} {}x{}x{}", s.what, s.M, s.N, s.K);
      const int64_t kb = ceil_div(s.K, kBlock);
      DeviceBuffer a = random_buffer(bytes_of({s.M, s.K}, 1), 0x77, 1);  // 0x77: finite e4m3
      DeviceBuffer w = random_buffer(bytes_of({s.N, s.K}, 1), 0x77, 2);
      DeviceBuffer as = random_buffer(bytes_of({s.M, kb}, 4), 0x3f, 3);
      DeviceBuffer ws = random_buffer(bytes_of({ceil_div(s.N, kBlock), kb}, 4), 0x3f, 4);
      DeviceBuffer y(bytes_of({s.M, s.N}, 2));
      const Fp8Gemm p{a.as<uint8_t>(), as.as<float>(), w.as<uint8_t>(), ws.as<float>(), y.as<bf16>(), s.M, s.N, s.K, s.N};
      const Timing t = time([&] { fp8_gemm(p, nullptr); });
      KernelBenchRow r = row("fp8_gemm", shape, s.M, 0, t);
      const double tflops = 2.0 * double(s.M) * double(s.N) * double(s.K) / t.median_us / 1e6;
      r.metrics.push_back({"TFLOPS", tflops});
      add_pct(r, "%mma_f16", tflops, roof().mma_f16);
      add_pct(r, "%fp8_sheet", tflops, roof().sheet_fp8);
      const double tbs = double(s.N) * double(s.K) / t.median_us / 1e6;  // weight bytes
      r.metrics.push_back({"weights_TB/s", tbs});
      add_pct(r, "%HBM_meas", tbs, roof().read_tbs);
      emit(std::move(r));
    }
  }

  const KernelBenchOptions& o_;
  std::vector<KernelBenchRow>& rows_;
  DeviceBuffer flush_;
  TimingOptions timing_;
};

bool has(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

// Fixed-width number: 4 significant digits where it matters, no exponents.
std::string num(double v) {
  const double a = std::abs(v);
  return fmt::format("{:.{}f}", v, a >= 1000 ? 0 : a >= 100 ? 1 : a >= 10 ? 2 : 3);
}

std::string csv_field(std::string s) {
  for (char& c : s)
    if (c == ',' || c == '\n' || c == '\r' || c == '"') c = ';';
  return s;
}

const KernelMetric* metric(const KernelBenchRow& r, const char* name) {
  for (const auto& m : r.metrics)
    if (m.name == name) return &m;
  return nullptr;
}

}  // namespace

std::vector<KernelBenchRow> run_kernel_bench(const KernelBenchOptions& o) {
  std::vector<KernelBenchRow> rows;
  Sweep sweep(o, rows);
  for (const std::string& s : kernel_bench_sections()) {
    if (s == "roofline" || !has(o.sections, s)) continue;
    try {
      sweep.run(s);
    } catch (const std::exception& e) {
      sweep.emit({"error", s, 0, 0, 0, 0, {}, e.what()});
    }
  }
  return rows;
}

std::string format_roofline(const GpuRoofline& r) {
  std::string s = fmt::format(
      "GPU {}: {}, sm_{}{}, {} SMs, peak clocks SM {} MHz / memory {} MHz x {} bit ({:.2f} TB/s from clocks), "
      "{:.1f} GiB, L2 {:.0f} MiB; driver {}.{}, runtime {}.{}\n",
      r.device, r.name, r.cc_major, r.cc_minor, r.sms, r.sm_clock_mhz, r.mem_clock_mhz, r.bus_bits, r.clock_tbs(),
      r.mem_gib, r.l2_mib, r.driver_version / 1000, r.driver_version % 1000 / 10, r.runtime_version / 1000,
      r.runtime_version % 1000 / 10);
  if (r.sheet.empty())
    s += "Datasheet: this GPU is not in our table (% of datasheet columns are left out)\n";
  else
    s += fmt::format("Datasheet {}: {:.2f} TB/s, {:.0f} dense BF16 TFLOPS, {:.0f} dense FP8 TFLOPS (wgmma)\n", r.sheet,
                     r.sheet_tbs, r.sheet_bf16, r.sheet_fp8);
  if (!r.measured) return s + "Roofline not measured (section \"roofline\" off): no %..._meas / %mma_... columns\n";
  // label, best / median, unit, and % of the datasheet figure when known.
  auto line = [&](const std::string& label, double best, double med, const char* unit, double sheet, int prec) {
    s += fmt::format("  {:<40} {:>8.{}f} / {:>8.{}f} {}", label, best, prec, med, prec, unit);
    s += sheet > 0 ? fmt::format("  ({:.0f}% of datasheet)\n", pct(best, sheet)) : std::string("\n");
  };
  s += "Measured roofline (best / median of the timed runs):\n";
  line(fmt::format("HBM read-only stream, {:.0f} GiB", r.buf_gib), r.read_tbs, r.read_tbs_med, "TB/s", r.sheet_tbs, 2);
  line(fmt::format("HBM copy kernel, {:.0f} GiB (read+write)", r.buf_gib / 2), r.copy_tbs, r.copy_tbs_med, "TB/s",
       r.sheet_tbs, 2);
  line(fmt::format("cudaMemcpy D2D, {:.0f} GiB (read+write)", r.buf_gib / 2), r.memcpy_tbs, r.memcpy_tbs_med, "TB/s",
       r.sheet_tbs, 2);
  line("mma.sync m16n8k16 bf16 -> fp32", r.mma_bf16, r.mma_bf16_med, "TFLOPS", r.sheet_bf16, 0);
  line("mma.sync m16n8k16 f16 -> fp32", r.mma_f16, r.mma_f16_med, "TFLOPS", r.sheet_bf16, 0);
  if (r.read_tbs > 0)
    s += fmt::format("  ridge points (mma.sync / HBM read): bf16 {:.0f} FLOP/B, f16 (exact FP8) {:.0f} FLOP/B\n",
                     r.mma_bf16 / r.read_tbs, r.mma_f16 / r.read_tbs);
  s += "Note: mma.sync is the pre-Hopper tensor-core instruction that our kernels use; on Hopper only wgmma\n"
       "(warpgroup MMA, sm_90a) reaches the datasheet peaks, so the mma.sync peaks above are below them.\n"
       "sm_90 has no e4m3 mma.sync: ptxas lowers it to e4m3->f16 conversions and f16 HMMAs, so the exact FP8\n"
       "kernels run on the f16 rate (%mma_f16).\n"
       "%mma_* = % of the measured mma.sync peak, %*_sheet = % of the datasheet, %HBM_meas = % of the\n"
       "measured read-only bandwidth.\n";
  return s;
}

std::vector<KernelBenchRow> roofline_rows(const GpuRoofline& r) {
  std::vector<KernelBenchRow> v;
  v.push_back({"gpu", r.name, 0, 0, 0, 0,
               {{"sms", double(r.sms)}, {"cc", r.cc_major + 0.1 * r.cc_minor}, {"sm_clock_MHz", double(r.sm_clock_mhz)},
                {"mem_clock_MHz", double(r.mem_clock_mhz)}, {"bus_bits", double(r.bus_bits)},
                {"mem_GiB", r.mem_gib}, {"l2_MiB", r.l2_mib}},
               ""});
  if (!r.sheet.empty())
    v.push_back({"datasheet", r.sheet, 0, 0, 0, 0,
                 {{"TB/s", r.sheet_tbs}, {"bf16_TFLOPS", r.sheet_bf16}, {"fp8_TFLOPS", r.sheet_fp8}}, ""});
  if (!r.measured) return v;
  const std::string gib = fmt::format("{:.0f}GiB", r.buf_gib), half = fmt::format("{:.0f}GiB", r.buf_gib / 2);
  v.push_back({"roof_hbm_read", gib, 0, 0, 0, 0, {{"TB/s", r.read_tbs}, {"TB/s_median", r.read_tbs_med}}, ""});
  v.push_back({"roof_hbm_copy", half, 0, 0, 0, 0, {{"TB/s", r.copy_tbs}, {"TB/s_median", r.copy_tbs_med}}, ""});
  v.push_back({"roof_cudaMemcpy", half, 0, 0, 0, 0, {{"TB/s", r.memcpy_tbs}, {"TB/s_median", r.memcpy_tbs_med}}, ""});
  v.push_back({"roof_mma_sync", "m16n8k16 bf16", 0, 0, 0, 0, {{"TFLOPS", r.mma_bf16}, {"TFLOPS_median", r.mma_bf16_med}}, ""});
  v.push_back({"roof_mma_sync", "m16n8k16 f16", 0, 0, 0, 0, {{"TFLOPS", r.mma_f16}, {"TFLOPS_median", r.mma_f16_med}}, ""});
  return v;
}

std::string format_row_header() {
  return fmt::format("{:<18} {:<30} {:>10} {:>4}  {}", "kernel", "shape", "us", "reps", "metrics");
}

std::string format_row(const KernelBenchRow& r) {
  if (!r.note.empty()) return fmt::format("{:<18} {:<30} {}", r.kernel, r.shape, r.note);
  std::string s = fmt::format("{:<18} {:<30} {:>10.2f} {:>4} ", r.kernel, r.shape, r.us, r.reps);
  for (const auto& m : r.metrics) s += fmt::format(" {} {}", m.name, num(m.value));
  return s;
}

std::string format_layer_table(const std::vector<KernelBenchRow>& rows) {
  std::vector<int64_t> ctxs, batches;
  for (const auto& r : rows) {
    if (r.kernel != "layer" || !r.note.empty()) continue;
    if (std::find(ctxs.begin(), ctxs.end(), r.ctx) == ctxs.end()) ctxs.push_back(r.ctx);
    if (std::find(batches.begin(), batches.end(), r.batch) == batches.end()) batches.push_back(r.batch);
  }
  if (ctxs.empty()) return "";
  std::string s = fmt::format(
      "One attention layer, decode step (indexer {}x{} + top-{} + sparse MLA h={}), one query token per sequence;\n"
      "us per call: total [indexer / top-k / MLA], each timed alone; total timed as one sequence of the three\n",
      kIdxHeads, kIdxDim, kTopK, kHeads);
  s += fmt::format("{:>6}", "ctx");
  for (int64_t b : batches) s += fmt::format(" | {:>30}", fmt::format("b={}", b));
  s += "\n";
  for (int64_t c : ctxs) {
    s += fmt::format("{:>6}", ctx_label(c));
    for (int64_t b : batches) {
      std::string cell = "-";
      for (const auto& r : rows)
        if (r.kernel == "layer" && r.note.empty() && r.ctx == c && r.batch == b) {
          const KernelMetric *i = metric(r, "indexer_us"), *t = metric(r, "topk_us"), *m = metric(r, "mla_us");
          cell = fmt::format("{:.1f} [{:.1f} / {:.1f} / {:.1f}]", r.us, i ? i->value : 0, t ? t->value : 0,
                             m ? m->value : 0);
        }
      s += fmt::format(" | {:>30}", cell);
    }
    s += "\n";
  }
  return s;
}

std::string csv_header() { return "kernel,shape,batch,ctx,us,reps,metric,value,note\n"; }

std::string csv_lines(const KernelBenchRow& r) {
  const std::string head =
      fmt::format("{},{},{},{},{:.3f},{}", csv_field(r.kernel), csv_field(r.shape), r.batch, r.ctx, r.us, r.reps);
  if (r.metrics.empty()) return fmt::format("{},us,{:.3f},{}\n", head, r.us, csv_field(r.note));
  std::string s;
  for (const auto& m : r.metrics) s += fmt::format("{},{},{:.4f},{}\n", head, csv_field(m.name), m.value, csv_field(r.note));
  return s;
}

int kernel_bench_report(KernelBenchOptions o, const std::string& csv_path, std::FILE* out) {
  std::string known;
  for (const auto& s : kernel_bench_sections()) known += (known.empty() ? "" : ",") + s;
  for (const auto& s : o.sections)
    DSA_CHECK(has(kernel_bench_sections(), s), "unknown kernel-bench section \"{}\" (known: {})", s, known);
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> csv(nullptr, &std::fclose);
  if (!csv_path.empty()) {
    csv.reset(std::fopen(csv_path.c_str(), "w"));
    DSA_CHECK(csv != nullptr, "cannot write {}", csv_path);
    std::fputs(csv_header().c_str(), csv.get());
  }
  int errors = 0;
  auto put = [&](const KernelBenchRow& r) {
    fmt::print(out, "{}\n", format_row(r));
    std::fflush(out);
    if (csv) {
      std::fputs(csv_lines(r).c_str(), csv.get());
      std::fflush(csv.get());
    }
    if (r.kernel == "error") ++errors;
  };
  GpuRoofline roof;
  const bool measure = has(o.sections, "roofline");
  if (measure) fmt::print(out, "Measuring the GPU roofline (HBM streams, mma.sync loops; ~1 s)...\n");
  std::fflush(out);
  try {
    roof = gpu_roofline(measure);
  } catch (const std::exception& e) {
    put({"error", "roofline", 0, 0, 0, 0, {}, e.what()});
    roof = gpu_roofline(false);
  }
  fmt::print(out, "{}\n", format_roofline(roof));
  if (csv)
    for (const auto& r : roofline_rows(roof)) std::fputs(csv_lines(r).c_str(), csv.get());
  o.roof = &roof;
  o.on_row = put;
  fmt::print(out,
             "Kernels at DeepSeek-V3.2 dims. Each figure: median of up to {} calls, CUDA events around each call,\n"
             "256 MiB L2 flush (memset) before each; tiny_kernel is the launch + event floor inside every figure.\n"
             "{}\n",
             o.timing.reps, format_row_header());
  const std::vector<KernelBenchRow> rows = run_kernel_bench(o);
  const std::string layer = format_layer_table(rows);
  if (!layer.empty()) fmt::print(out, "\n{}", layer);
  std::fflush(out);
  return errors;
}

}  // namespace dsa::ops::cuda
