// The cpu training-op table: fast kernels where they matter (ops/cpu/grad_*.cc), the reference
// where the op is cheap bookkeeping.
#include "ops/cpu/cpu_ops.h"
#include "ops/ref/ref_util.h"

namespace dsa::ops {

const GradTable& cpu_grad_ops() {
  static const GradTable table = {
      &cpu::gemm,           &cpu::dequant,          &cpu::weight_quant,     &cpu::rms_norm_bwd,
      &cpu::layer_norm_bwd, &cpu::rope_bwd,         &ref::hadamard_f32,     &cpu::sparse_mla_bwd_q,
      &cpu::sparse_mla_bwd_kv, &cpu::silu_mul_bwd,  &cpu::moe_gate_bwd,     &ref::moe_combine_bwd,
      &cpu::scatter_add_rows, &cpu::logits_grad,    &cpu::adamw,            &cpu::sum_squares,
      &cpu::axpy,           &ref::indexer_kl,       &ref::indexer_logits_bwd, &ref::mask_logits,
  };
  return table;
}

}  // namespace dsa::ops
