// Declarations of the optimised CPU ops (ops/cpu/*.cc, Highway SIMD with runtime dispatch plus
// the base/thread_pool); table.cc collects them into cpu_ops().
#pragma once
#include "ops/grad.h"
#include "ops/ops.h"

namespace dsa::ops::cpu {

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
void moe_combine(const MoeCombine& p);
// Training (ops/grad.h).
void gemm(const Gemm& p);
void dequant(const Dequant& p);
void weight_quant(const WeightQuant& p);
void rms_norm_bwd(const RmsNormBwd& p);
void layer_norm_bwd(const LayerNormBwd& p);
void rope_bwd(const RopeBwd& p);
void sparse_mla_bwd_q(const SparseMlaBwdQ& p);
void sparse_mla_bwd_kv(const SparseMlaBwdKv& p);
void silu_mul_bwd(const SiluMulBwd& p);
void moe_gate_bwd(const MoeGateBwd& p);
void scatter_add_rows(const ScatterAddRows& p);
void logits_grad(const LogitsGrad& p);
void adamw(const AdamW& p);
void sum_squares(const SumSquares& p);
void axpy(const Axpy& p);

}  // namespace dsa::ops::cpu
