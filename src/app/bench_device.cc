// `dsa bench` on a device backend: the GPU kernel sweep of ops/cuda/kernel_bench.h (the same code
// as the cuda_bench binary). Compiled in every build; the sweep exists only with DSA_HAVE_CUDA.
#include <CLI/CLI.hpp>

#include "app/bench.h"
#include "base/error.h"
#ifdef DSA_HAVE_CUDA
#include "ops/cuda/kernel_bench.h"
#endif

namespace dsa::app::bench {

void add_device_kernel_options(CLI::App& cmd, DeviceKernelArgs& a) {
  cmd.add_flag("--kernels,!--no-kernels", a.enabled,
               "Device backends: GPU roofline + kernel sweep at V3.2 dims before the model part (default on)");
  cmd.add_option("--batches", a.batches, "Kernel sweep: batch sizes (sequences of one query token), e.g. 1,8,64,128")
      ->delimiter(',')
      ->check(CLI::Range(1, 65535));
  cmd.add_option("--kernel-contexts", a.contexts, "Kernel sweep: contexts of the indexer/top-k/layer grid")
      ->delimiter(',');
  cmd.add_option("--kernel-sweep", a.sections,
                 "Kernel sweep sections (default all): roofline,floor,mla,indexer,topk,layer,prefill,gemm")
      ->delimiter(',');
  cmd.add_option("--kernel-reps", a.reps, "Kernel sweep: timed calls per shape (median; fewer for slow shapes)")
      ->check(CLI::Range(1, 1000));
}

int run_device_kernels(const DeviceKernelArgs& a, const ops::OpTable& backend, const std::string& out_dir) {
  if (!a.enabled || !backend.mem.device) return 0;
#ifdef DSA_HAVE_CUDA
  namespace cu = ops::cuda;
  DSA_CHECK(std::string(backend.name) == "cuda", "the kernel sweep exists for the cuda backend only, not {}",
            backend.name);
  cu::KernelBenchOptions o;
  if (!a.sections.empty()) o.sections = a.sections;
  o.batches = a.batches;
  o.contexts.clear();
  for (const auto& c : a.contexts) {
    o.contexts.push_back(parse_ctx(c));
    DSA_CHECK(o.contexts.back() < (int64_t(1) << 31), "kernel context {} too large (int32 positions)", c);
  }
  o.timing.reps = a.reps;
  const std::string csv = out_dir + "/gpu_kernels.csv";
  fmt::print("GPU kernel sweep (backend {}; --no-kernels skips it, --no-model runs it alone)\n", backend.name);
  std::fflush(stdout);
  const int errors = cu::kernel_bench_report(o, csv, stdout);
  fmt::print("\nwrote {}{}\n\n", csv, errors ? fmt::format(" ({} section(s) FAILED: see the error rows)", errors) : "");
  std::fflush(stdout);
  return errors;
#else
  DSA_FAIL("backend {} is a device backend, but this dsa was built without CUDA: no kernel sweep", backend.name);
#endif
}

}  // namespace dsa::app::bench
