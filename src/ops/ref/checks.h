// Argument checks of the host ops (ops/ref/checks.cc), shared by the reference and ops/cpu:
// one statement of what each op accepts; they throw dsa::Error on bad input. No pragmas here
// (ref_util.h turns off FMA contraction; the CPU kernels include this header alone).
#pragma once
#include "ops/ops.h"

namespace dsa::ops::ref {

void check(const ActQuant& p);
void check(const Fp8Gemm& p);
void check(const LinearF32& p);
void check(const RmsNorm& p);
void check(const LayerNorm& p);
void check(const Rope& p);
void check(const Hadamard& p);
void check(const SiluMul& p);
void check(const IndexerLogits& p);
void check(const TopK& p);
void check(const SparseMhaPrefill& p);
void check(const SparseMlaDecode& p);
void check(const HeadMatmul& p);
void check(const MoeGate& p);

}  // namespace dsa::ops::ref
