// Helpers of `dsa bench` (src/app/bench_*.cc): machine roofline, a timing proxy around an
// OpTable with per-op bytes/FLOPs, and synthetic filling of the KV caches.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"
#include "ops/ops.h"

namespace CLI {
class App;
}

namespace dsa::app::bench {

// "4096", "4K", "128K", "1M" -> tokens (cmd_bench.cc); throws dsa::Error on anything else.
int64_t parse_ctx(const std::string& s);

// ---- Roofline of this machine (bench_roofline.cc).
struct Roofline {
  int threads = 1;
  double triad_gbs = 0;       // STREAM triad a = b + s*c, 24 B per element (no write-allocate credit)
  double fma_f32_gflops = 0;  // register-blocked fp32 FMA loop, all threads
  double dp_bf16_gflops = 0;  // AVX512-BF16 vdpbf16ps loop (0 when the CPU lacks it)
  std::string isa;            // vector ISA used for the FMA loop
};
Roofline measure_roofline(int threads, double seconds);

// ---- Timing proxy (bench_proxy.cc). Static globals: one proxy per process.
enum Op : int {
  kActQuant, kFp8Gemm, kLinearF32, kRmsNorm, kLayerNorm, kRope, kHadamard, kIndexerLogits, kTopK,
  kSparseMhaPrefill, kSparseMlaDecode, kHeadMatmul, kMoeGate, kSiluMul, kGroupedFp8Gemm, kMoeRoute, kMoeCombine,
  kNumOps
};
const char* op_name(int op);
struct OpStat {
  int64_t calls = 0;
  double seconds = 0, bytes = 0, flops = 0;  // bytes: minimum memory traffic; flops: useful FLOPs
};
using OpStats = std::array<OpStat, kNumOps>;
// Returns a table whose entries time `inner`'s ops and account bytes/FLOPs from their parameters.
// rms_norm calls over `hidden` columns are recorded as layer marks (attn_norm, ffn_norm, final).
const ops::OpTable& timing_proxy(const ops::OpTable& inner, int64_t hidden);
void proxy_reset();               // clears stats and marks
OpStats proxy_stats();
std::vector<double> proxy_marks();  // seconds since the clock origin, one per hidden-size rms_norm
double now_s();

// Per-layer split of one forward call from its marks: attention (attn_norm..ffn_norm) and FFN
// (ffn_norm..next attn_norm or final norm), in ms. Empty when the marks do not fit `layers`.
struct LayerTimes {
  std::vector<double> attn_ms, ffn_ms;
};
LayerTimes split_layers(const std::vector<double>& marks, int64_t layers);

// ---- Synthetic KV (bench_kv.cc): reserves ctx tokens in `st` (must be empty) and writes random
// valid rows straight into every layer's pools: FP8 latents (no NaN codes) with power-of-two
// scales and bf16 RoPE parts; indexer keys FP8 with power-of-two scales. Sets st.len = ctx.
void fill_synthetic(SequenceState& st, const ModelConfig& c, int64_t ctx, uint64_t seed);

// ---- GPU kernel sweep on device backends (bench_device.cc; the sweep exists in CUDA builds):
// the GPU's roofline, kernel rates at V3.2 dims and one attention layer at contexts x batches
// (ops/cuda/kernel_bench.h). Tables to stdout, CSV to <out_dir>/gpu_kernels.csv.
struct DeviceKernelArgs {
  bool enabled = true;
  std::vector<int64_t> batches = {1, 8, 64, 128};
  std::vector<std::string> contexts = {"4K", "16K", "64K", "128K"};
  std::vector<std::string> sections;  // empty = all
  int reps = 20;
};
void add_device_kernel_options(CLI::App& cmd, DeviceKernelArgs& a);
// Runs the sweep when a.enabled and `backend` is a device backend; returns the number of failed
// sections (0 when nothing ran).
int run_device_kernels(const DeviceKernelArgs& a, const ops::OpTable& backend, const std::string& out_dir);

}  // namespace dsa::app::bench
