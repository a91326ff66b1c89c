// Internal interface of sparse_mla_decode: warp-specialised wgmma kernel (mla_ws.cu), fused kernel
// (mla_fused.cu) and the two-pass fallback (mla_scores.cu + mla_pv.cu).
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

// Warp-specialised sm_90a kernel (mla_ws.cu) for (kv_lora, rope) == (512, 64); returns false
// (nothing launched) for other layouts, misaligned pointers or a non-sm_90 device.
bool mla_ws(const SparseMlaDecode& p, cudaStream_t stream);

// Split-K merge shared by mla_fused and mla_ws: part[i, r, 0:L] (fp32, unnormalised, split stride
// rows * L) and ml[i, r] = (m, l) of splits i < splits (<= 128) ->
// o[r, :] = bf16( sum_i part_i e^{m_i - M} / sum_i l_i e^{m_i - M} ); a row with no key -> zeros.
void mla_combine(const float* part, const float2* ml, bf16* o, int64_t rows, int64_t L, int splits,
                 cudaStream_t stream);

}  // namespace dsa::ops::cuda::detail
