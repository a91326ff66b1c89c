// Kernel benchmarks of the CUDA backend at DeepSeek-V3.2 dims, for builds without the dsa CLI
// (the same sweep as `dsa bench --device cuda`; see ops/cuda/kernel_bench.h).
// Usage: cuda_bench [CSV] [SECTIONS] [BATCHES], e.g. cuda_bench out.csv roofline,layer 1,128
// (SECTIONS: comma list of roofline,floor,mla,indexer,topk,layer,prefill,gemm; default all).
#include <cstdio>
#include <exception>
#include <sstream>
#include <string>

#include "ops/cuda/kernel_bench.h"

namespace {
std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream in(s);
  for (std::string x; std::getline(in, x, ',');)
    if (!x.empty()) v.push_back(x);
  return v;
}
}  // namespace

int main(int argc, char** argv) {
  namespace cu = dsa::ops::cuda;
  try {
    cu::KernelBenchOptions o;
    if (argc > 2) o.sections = split(argv[2]);
    if (argc > 3) {
      o.batches.clear();
      for (const auto& b : split(argv[3])) o.batches.push_back(std::stoll(b));
    }
    const int errors = cu::kernel_bench_report(o, argc > 1 ? argv[1] : "", stdout);
    if (errors) std::fprintf(stderr, "cuda_bench: %d section(s) failed\n", errors);
    return errors ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cuda_bench failed: %s\n", e.what());
    return 1;
  }
}
