// Kernel benchmarks of the CUDA backend at DeepSeek-V3.2 dims and the GPU roofline they are read
// against. One implementation for both front ends: `dsa bench --device cuda` (src/app) and the
// cuda_bench binary. Timing of every figure: CUDA events around the call, a 256 MiB L2 flush
// (memset, as Triton's do_bench) before each call, median of the timed calls.
// No CUDA types here, so that host code of other layers can include this header.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace dsa::ops::cuda {

// ---- Roofline of the GPU (roofline.cu).
struct GpuRoofline {
  // From cudaGetDeviceProperties / device attributes.
  std::string name;
  int device = 0, cc_major = 0, cc_minor = 0, sms = 0;
  int sm_clock_mhz = 0, mem_clock_mhz = 0, bus_bits = 0;  // peak clocks as the driver reports them
  int driver_version = 0, runtime_version = 0;
  double mem_gib = 0, l2_mib = 0;
  bool measured = false;  // false: only the fields above and the datasheet are filled
  // Measured: best and median of several runs. Bandwidths in TB/s (1e12 B/s), rates in TFLOPS.
  double buf_gib = 0;                         // size of the streamed buffer
  double read_tbs = 0, read_tbs_med = 0;      // read-only streaming kernel (bytes read)
  double copy_tbs = 0, copy_tbs_med = 0;      // copy kernel (bytes read + written)
  double memcpy_tbs = 0, memcpy_tbs_med = 0;  // cudaMemcpy device to device (read + written)
  double mma_bf16 = 0, mma_bf16_med = 0;      // mma.sync m16n8k16 bf16, fp32 accumulate
  double mma_f16 = 0, mma_f16_med = 0;        // mma.sync m16n8k16 f16 (what exact FP8 runs on), fp32 acc.
  // Datasheet of the detected GPU (dense, no sparsity); 0 when the GPU is not in our table.
  std::string sheet;
  double sheet_tbs = 0, sheet_bf16 = 0, sheet_fp8 = 0;
  // HBM bandwidth from the reported memory clock and bus width (double data rate).
  double clock_tbs() const { return 2.0 * mem_clock_mhz * 1e6 * (bus_bits / 8.0) / 1e12; }
};
// Device properties and datasheet; with `measure`, also the bandwidth and mma.sync probes (~1 s).
GpuRoofline gpu_roofline(bool measure);
// One empty kernel <<<1, 32>>> on the legacy default stream: the launch floor of the sweep.
void launch_empty_kernel();

// ---- Owned device memory of the benchmarks: cudaMalloc'ed (at least 256 B), freed on scope exit
// also when a measurement throws.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr, o.bytes_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return p_; }
  template <class T>
  T* as() const { return static_cast<T*>(p_); }
  size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

// ---- Timing shared by the roofline probes and the sweep.
struct Timing {
  double median_us = 0, best_us = 0;
  int reps = 0;  // timed calls behind the median
};
struct TimingOptions {
  int reps = 20;          // timed calls when they fit the budget
  double budget_s = 0.5;  // fewer calls (>= 3; 1 when one call alone takes > 2 s) beyond this
  void* flush = nullptr;  // device buffer overwritten before each timed call (nullptr: no flush)
  size_t flush_bytes = 0;
};
// fn() queues its work on the legacy default stream. A first untimed call absorbs lazy module
// loading and workspace growth; short calls get two more warm-up calls.
Timing time_calls(const std::function<void()>& fn, const TimingOptions& t);

// ---- The sweep.
struct KernelMetric {
  std::string name;  // e.g. "TFLOPS", "TB/s", "%HBM_meas" (percent of the measured bandwidth)
  double value = 0;
};
struct KernelBenchRow {
  std::string kernel, shape;
  int64_t batch = 0, ctx = 0;  // 0 where they do not apply
  double us = 0;               // median per call
  int reps = 0;
  std::vector<KernelMetric> metrics;
  std::string note;  // set on "skipped" / "error" rows
};

// Section names, in run order: roofline (GPU roofline; run by kernel_bench_report, ignored by
// run_kernel_bench), floor (tiny kernels: the launch + event floor inside every figure), mla
// (sparse MLA decode), indexer, topk, layer (indexer + top-k + sparse MLA), prefill (sparse MHA
// prefill), gemm (fp8 GEMM).
const std::vector<std::string>& kernel_bench_sections();

struct KernelBenchOptions {
  std::vector<std::string> sections = kernel_bench_sections();
  std::vector<int64_t> batches = {1, 8, 64, 128};             // sequences, one query token each
  std::vector<int64_t> contexts = {4096, 16384, 65536, 131072};  // keys per sequence
  TimingOptions timing;                                       // flush is supplied by the sweep
  int64_t prefill_tokens = 4096, prefill_context = 8192;      // sparse_mha_prefill shape
  const GpuRoofline* roof = nullptr;                          // for the % metrics (may be null)
  std::function<void(const KernelBenchRow&)> on_row;          // each row as soon as it exists
};
// Runs the chosen sections. A failing section gives an "error" row (its note says why) and the
// sweep goes on; shapes that do not fit in free device memory give "skipped" rows.
std::vector<KernelBenchRow> run_kernel_bench(const KernelBenchOptions& o);

// ---- Output shared by the front ends.
std::string format_roofline(const GpuRoofline& r);
std::vector<KernelBenchRow> roofline_rows(const GpuRoofline& r);  // the roofline as CSV rows
std::string format_row_header();
std::string format_row(const KernelBenchRow& r);
// The attention layer as a table context x batch: total [indexer / top-k / MLA] in us.
std::string format_layer_table(const std::vector<KernelBenchRow>& rows);
std::string csv_header();
std::string csv_lines(const KernelBenchRow& r);  // one line per metric (or one with metric "us")

// Checks the section names, measures the roofline (section "roofline"; device facts and datasheet
// always), runs the sweep; prints to `out` as rows come and writes every row to `csv_path`
// (flushed per row; empty = no CSV). Returns the number of "error" rows.
int kernel_bench_report(KernelBenchOptions o, const std::string& csv_path, std::FILE* out);

}  // namespace dsa::ops::cuda
