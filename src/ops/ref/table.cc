// The reference op table: every entry points at the scalar implementation in ops/ref.
#include "ops/grad.h"
#include "ops/ref/ref_util.h"

namespace dsa::ops {

const OpTable& ref_ops() {
  static const OpTable table = {
      "ref",
      host_memory(),
      &ref::act_quant,
      &ref::fp8_gemm,
      &ref::grouped_fp8_gemm,
      &ref::linear_f32,
      &ref::rms_norm,
      &ref::layer_norm,
      &ref::rope,
      &ref::hadamard,
      &ref::indexer_logits,
      &ref::topk,
      &ref::sparse_mha_prefill,
      &ref::sparse_mla_decode,
      &ref::head_matmul,
      &ref::moe_gate,
      &ref::silu_mul,
      &ref::moe_route,
      &ref::moe_combine,
      &ref::copy_rows,
      &ref::convert,
      &ref::indexer_weights,
      &ref::paged_rows,
      &ref::scale_add,
      &ref_grad_ops(),
  };
  return table;
}

}  // namespace dsa::ops
