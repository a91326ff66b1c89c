// Internal interface of sparse_mla_decode: fused kernel (mla_fused.cu) and the two-pass fallback.
#pragma once
#include <cstdint>

#include "ops/cuda/common.cuh"

namespace dsa::ops::cuda::detail {

// Key slots are padded to a multiple of 64 (padding = "no key").
inline int64_t mla_kpad(int64_t K) { return (K + 63) / 64 * 64; }

// scores[s, h, j] (bf16 bits, row stride Kp) <- p = bf16(softmax(score)) for every j < Kp.
void mla_scores_softmax(const SparseMlaDecode& p, uint16_t* scores, int64_t Kp,
                        cudaStream_t stream);

// Fused split-K kernel (mla_fused.cu) for (kv_lora, rope) in {(512,64), (256,32), (128,16)};
// returns false (nothing launched) for other layouts.
bool mla_fused(const SparseMlaDecode& p, cudaStream_t stream);

}  // namespace dsa::ops::cuda::detail
