// The optimised CPU op table: every entry points at a kernel in ops/cpu.
#include "ops/cpu/cpu_ops.h"
#include "ops/grad.h"
#include "ops/ref/ref_util.h"  // the data-movement ops are shared with ref

namespace dsa::ops {

const OpTable& cpu_ops() {
  static const OpTable table = {
      "cpu",
      host_memory(),
      &cpu::act_quant,
      &cpu::fp8_gemm,
      &cpu::grouped_fp8_gemm,
      &cpu::linear_f32,
      &cpu::rms_norm,
      &cpu::layer_norm,
      &cpu::rope,
      &cpu::hadamard,
      &cpu::indexer_logits,
      &cpu::topk,
      &cpu::sparse_mha_prefill,
      &cpu::sparse_mla_decode,
      &cpu::head_matmul,
      &cpu::moe_gate,
      &cpu::silu_mul,
      &ref::moe_route,  // O(S*k) bookkeeping: the reference is fast enough
      &cpu::moe_combine,
      &ref::copy_rows,
      &ref::convert,
      &ref::indexer_weights,
      &ref::paged_rows,
      &ref::scale_add,
      &cpu_grad_ops(),
  };
  return table;
}

}  // namespace dsa::ops
