// The cpu training-op table: fast kernels where they matter (ops/cpu/grad_*.cc), the reference
// where the op is cheap bookkeeping.
#include "ops/cpu/cpu_ops.h"
#include "ops/ref/ref_util.h"

namespace dsa::ops {

const GradTable& cpu_grad_ops() {
  static const GradTable table = {
      &cpu::gemm,          &ref::dequant,          &ref::weight_quant,     &ref::rms_norm_bwd,
      &ref::layer_norm_bwd, &ref::rope_bwd,        &ref::hadamard_f32,     &ref::sparse_mla_bwd_q,
      &ref::sparse_mla_bwd_kv, &ref::silu_mul_bwd, &ref::moe_gate_bwd,     &ref::moe_combine_bwd,
      &ref::scatter_add_rows, &ref::logits_grad,   &ref::adamw,            &ref::sum_squares,
      &ref::axpy,
  };
  return table;
}

}  // namespace dsa::ops
