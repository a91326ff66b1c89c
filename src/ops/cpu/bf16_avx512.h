// AVX512-BF16 (vdpbf16ps) kernels for Zen4-class CPUs, outside Highway (1.0.3 has no bf16 dot):
// FP8 -> bf16 decode by VBMI byte tables, used by the indexer, FP8 GEMV and MLA decode.
#pragma once
#include <cstdint>

#include "ops/ops.h"

namespace dsa::ops::cpu {

// True when the CPU has AVX512-BF16 and AVX512-VBMI (checked once). Callers only take the bf16
// paths from their AVX-512 Highway target, so OS support of the zmm state is already known.
bool bf16_dot_available();

// Same results as the fp32 kernels up to summation order (products are exact in both):
// see the tolerance derivations in tests/ops_cpu_test.cc.
void indexer_logits_bf16(const IndexerLogits& p);
// fp8_gemm for every M (one fixed arithmetic per output: rows are independent); p is checked.
void fp8_gemv_bf16(const Fp8Gemm& p);
void sparse_mla_decode_bf16(const SparseMlaDecode& p);
void sparse_mha_prefill_bf16(const SparseMhaPrefill& p);

}  // namespace dsa::ops::cpu
