// The reference training-op table (ops/grad.h): the scalar implementations in ops/ref/grad_*.cc.
#include "ops/ref/ref_util.h"

namespace dsa::ops {

const GradTable& ref_grad_ops() {
  static const GradTable table = {
      &ref::gemm,          &ref::dequant,          &ref::weight_quant,     &ref::rms_norm_bwd,
      &ref::layer_norm_bwd, &ref::rope_bwd,        &ref::hadamard_f32,     &ref::sparse_mla_bwd_q,
      &ref::sparse_mla_bwd_kv, &ref::silu_mul_bwd, &ref::moe_gate_bwd,     &ref::moe_combine_bwd,
      &ref::scatter_add_rows, &ref::logits_grad,   &ref::adamw,            &ref::sum_squares,
      &ref::axpy,          &ref::indexer_kl,       &ref::indexer_logits_bwd,
      &ref::mask_logits,
  };
  return table;
}

}  // namespace dsa::ops
