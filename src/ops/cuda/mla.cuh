// Internal interface between the two halves of sparse_mla_decode (scores+softmax / P·V).
#pragma once
#include <cstdint>

#include "ops/cuda/common.cuh"

namespace dsa::ops::cuda::detail {

// Key slots are padded to a multiple of 64 (padding = "no key").
inline int64_t mla_kpad(int64_t K) { return (K + 63) / 64 * 64; }

// scores[s, h, j] (bf16 bits, row stride Kp) <- p = bf16(softmax(score)) for every j < Kp.
void mla_scores_softmax(const SparseMlaDecode& p, uint16_t* scores, int64_t Kp,
                        cudaStream_t stream);

}  // namespace dsa::ops::cuda::detail
