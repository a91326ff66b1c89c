// Declarations and small helpers shared by the scalar reference ops (ops/ref/*.cc).
// Included last in each file: it also turns off FMA contraction so rounding matches the spec.
#pragma once
#include <cstdint>
#include <cstring>

#include "base/error.h"
#include "base/numeric.h"
#include "ops/grad.h"
#include "ops/ops.h"
#include "ops/ref/checks.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace dsa::ops::ref {

void act_quant(const ActQuant& p);
void fp8_gemm(const Fp8Gemm& p);
void grouped_fp8_gemm(const GroupedFp8Gemm& p);
void linear_f32(const LinearF32& p);
void rms_norm(const RmsNorm& p);
void layer_norm(const LayerNorm& p);
void rope(const Rope& p);
void hadamard(const Hadamard& p);
void indexer_logits(const IndexerLogits& p);
void topk(const TopK& p);
void sparse_mha_prefill(const SparseMhaPrefill& p);
void sparse_mla_decode(const SparseMlaDecode& p);
void head_matmul(const HeadMatmul& p);
void moe_gate(const MoeGate& p);
void silu_mul(const SiluMul& p);
void moe_route(const MoeRoute& p);
void moe_combine(const MoeCombine& p);
void copy_rows(const CopyRows& p);
void convert(const Convert& p);
void indexer_weights(const IndexerWeights& p);
void paged_rows(const PagedRows& p);
void scale_add(const ScaleAdd& p);

// Training ops (ops/grad.h).
void check(const Gemm& p);
void gemm(const Gemm& p);
void dequant(const Dequant& p);
void weight_quant(const WeightQuant& p);
void rms_norm_bwd(const RmsNormBwd& p);
void layer_norm_bwd(const LayerNormBwd& p);
void rope_bwd(const RopeBwd& p);
void hadamard_f32(const HadamardF32& p);
void sparse_mla_bwd_q(const SparseMlaBwdQ& p);
void sparse_mla_bwd_kv(const SparseMlaBwdKv& p);
void silu_mul_bwd(const SiluMulBwd& p);
void moe_gate_bwd(const MoeGateBwd& p);
void moe_combine_bwd(const MoeCombineBwd& p);
void scatter_add_rows(const ScatterAddRows& p);
void logits_grad(const LogitsGrad& p);
void mask_logits(const MaskLogits& p);
void adamw(const AdamW& p);
void sum_squares(const SumSquares& p);
void axpy(const Axpy& p);
void indexer_kl(const IndexerKl& p);
void indexer_logits_bwd(const IndexerLogitsBwd& p);

inline float ld(bf16 v) {
  return bf16_to_f32(v);
}
inline bf16 st(float f) {
  return f32_to_bf16(f);
}

// grouped_fp8_gemm as one `gemm` call per non-empty group on its rows (gathered into contiguous
// scratch when p.rows is set). GEMM rows are independent, so this is the grouped op for any
// row-exact fp8_gemm; the reference passes its own, the cpu backend its fast kernel.
void grouped_fp8_gemm_by_group(const GroupedFp8Gemm& p, void (*gemm)(const Fp8Gemm&));

// p = bf16(softmax(score[0:n])) with fp32 max / exp / sum; scores are already bf16-valued.
void softmax_bf16(float* score, int64_t n);

// Dequantised latent cache row (spec §9 layout): c[0:kv_lora] = fp8 * scale, pe[0:rope] = bf16.
void dequant_latent_row(const uint8_t* row, const LatentLayout& lay, float* c, float* pe);

}  // namespace dsa::ops::ref
