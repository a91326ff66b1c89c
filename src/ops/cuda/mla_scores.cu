// sparse_mla_decode, part 1: gathered FP8 latent rows dequantised to bf16 in shared memory,
// scores by bf16 MMA with the reference's rounding points, then an exact softmax per (s, h).
#include <cmath>

#include "ops/cuda/mla.cuh"

namespace dsa::ops::cuda::detail {
namespace {

constexpr int kWarps = 8;     // 8 warps x 16 heads = 128 heads per block
constexpr int kTileKeys = 32;

__global__ void __launch_bounds__(kWarps * 32) mla_score_kernel(SparseMlaDecode p, uint16_t* scores,
                                                                int64_t Kp, int tiles_per_block) {
  extern __shared__ __align__(16) uint16_t sm[];
  const int64_t L = p.layout.kv_lora, R = p.layout.rope, D = L + R, ld = D + 8;
  const int64_t s = blockIdx.z, h_base = int64_t(blockIdx.y) * kWarps * 16;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
  uint16_t* qs = sm;                         // [128][ld]
  uint16_t* ks = sm + kWarps * 16 * ld;      // [32][ld]
  __shared__ int valid[kTileKeys];
  const int nh = int(imin(kWarps * 16, p.H - h_base));
  // Q rows: [q_abs ; q_pe] as bf16 bits.
  for (int64_t i = threadIdx.x; i < int64_t(nh) * (D / 2); i += blockDim.x) {
    const int64_t r = i / (D / 2), c = 2 * (i % (D / 2));
    const int64_t h = h_base + r;
    const uint32_t v = c < L ? *reinterpret_cast<const uint32_t*>(&p.q_abs[(s * p.H + h) * L + c].bits)
                             : *reinterpret_cast<const uint32_t*>(&p.q_pe[(s * p.H + h) * R + c - L].bits);
    *reinterpret_cast<uint32_t*>(qs + r * ld + c) = v;
  }
  const int64_t rb = lat_row_bytes(p.layout), nb = cdiv(L, kBlock);
  const int64_t j_begin = int64_t(blockIdx.x) * tiles_per_block * kTileKeys;
  const int64_t j_end = imin(Kp, j_begin + int64_t(tiles_per_block) * kTileKeys);
  const bool active = warp * 16 < nh;
  for (int64_t j0 = j_begin; j0 < j_end; j0 += kTileKeys) {
    __syncthreads();  // previous tile consumed (and Q written, first time)
    // Gather + dequantise: each warp fills 4 keys; a lane converts 4 fp8 at a time.
    for (int kk = warp; kk < kTileKeys; kk += kWarps) {
      const int64_t j = j0 + kk;
      int32_t row = j < p.K ? p.idx[s * p.K + j] : -1;
      if (row >= p.N) row = -1;
      if (lane == 0) valid[kk] = row >= 0;
      uint16_t* dst = ks + kk * ld;
      if (row < 0) {
        for (int64_t c = 2 * lane; c < D; c += 64) *reinterpret_cast<uint32_t*>(dst + c) = 0u;
        continue;
      }
      const uint8_t* src = p.cache + int64_t(row) * rb;
      for (int64_t c = 4 * lane; c < L; c += 128) {
        const uint32_t w = *reinterpret_cast<const uint32_t*>(src + c);
        float sc;
        memcpy(&sc, src + lat_scale_off(p.layout) + 4 * (c / kBlock), 4);
        *reinterpret_cast<uint32_t*>(dst + c) =
            pack_bf16(fp82f(w & 255u) * sc, fp82f((w >> 8) & 255u) * sc);
        *reinterpret_cast<uint32_t*>(dst + c + 2) =
            pack_bf16(fp82f((w >> 16) & 255u) * sc, fp82f(w >> 24) * sc);
      }
      for (int64_t c = 2 * lane; c < R; c += 64)
        *reinterpret_cast<uint32_t*>(dst + L + c) =
            *reinterpret_cast<const uint32_t*>(src + lat_rope_off(p.layout) + 2 * c);
      (void)nb;
    }
    __syncthreads();
    if (!active) continue;
    float acc1[4][4] = {}, acc2[4][4] = {};
    const uint16_t* qa = qs + (warp * 16 + g) * ld + 2 * t4;
    const uint16_t* kb = ks + g * ld + 2 * t4;
    // Dims [k_lo, k_hi) of the 16 x 32 score tile into acc (latent and rope dims summed apart).
    auto qk = [&](float (&acc)[4][4], int64_t k_lo, int64_t k_hi) {
      for (int64_t k0 = k_lo; k0 < k_hi; k0 += 16) {
        const uint32_t a0 = *reinterpret_cast<const uint32_t*>(qa + k0);
        const uint32_t a1 = *reinterpret_cast<const uint32_t*>(qa + 8 * ld + k0);
        const uint32_t a2 = *reinterpret_cast<const uint32_t*>(qa + k0 + 8);
        const uint32_t a3 = *reinterpret_cast<const uint32_t*>(qa + 8 * ld + k0 + 8);
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          const uint16_t* b = kb + nt * 8 * ld + k0;
          mma_bf16(acc[nt], a0, a1, a2, a3, *reinterpret_cast<const uint32_t*>(b),
                   *reinterpret_cast<const uint32_t*>(b + 8));
        }
      }
    };
    qk(acc1, 0, L);
    qk(acc2, L, D);
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int key = nt * 8 + 2 * t4 + (r & 1);
        const int64_t h = h_base + warp * 16 + g + (r >> 1) * 8;
        const float sc = valid[key] ? rbf(rbf(rbf(acc1[nt][r]) + rbf(acc2[nt][r])) * p.scale)
                                    : -INFINITY;
        if (h < p.H) scores[(s * p.H + h) * Kp + j0 + key] = f2bf(sc);
      }
    }
  }
}

// One warp per (s, h): max, fp32 sum of exp, p = bf16(e / sum) written over the scores.
__global__ void mla_softmax_kernel(uint16_t* scores, int64_t rows, int64_t Kp) {
  const int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  uint16_t* x = scores + r * Kp;
  float m = -INFINITY;
  for (int64_t j = lane; j < Kp; j += 32) m = fmaxf(m, bf2f(x[j]));
  m = warp_max(m);
  if (m == -INFINITY) {
    for (int64_t j = lane; j < Kp; j += 32) x[j] = 0;
    return;
  }
  float sum = 0.0f;
  for (int64_t j = lane; j < Kp; j += 32) sum += expf(bf2f(x[j]) - m);
  sum = warp_sum(sum);
  for (int64_t j = lane; j < Kp; j += 32) x[j] = f2bf(expf(bf2f(x[j]) - m) / sum);
}

}  // namespace

void mla_scores_softmax(const SparseMlaDecode& p, uint16_t* scores, int64_t Kp,
                        cudaStream_t stream) {
  const int64_t D = p.layout.kv_lora + p.layout.rope, ld = D + 8;
  const size_t smem = size_t(kWarps * 16 + kTileKeys) * size_t(ld) * 2;
  DSA_CUDA_REQUIRE(smem <= 220 * 1024, "sparse_mla_decode: kv_lora + rope too large");
  static size_t configured = 0;  // the opt-in limit counts static shared memory too: ask for what we use
  if (smem > configured) {
    CUDA_CHECK(cudaFuncSetAttribute(mla_score_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(smem)));
    configured = smem;
  }
  const int64_t hg = ceil_div(p.H, kWarps * 16), tiles = Kp / kTileKeys;
  const int64_t want = 132 * 2, per = std::max<int64_t>(1, want / (p.S * hg));
  const int64_t nx = std::min<int64_t>(tiles, per);
  const int tpb = int(ceil_div(tiles, nx));
  const dim3 grid(unsigned(ceil_div(tiles, tpb)), unsigned(hg), unsigned(p.S));
  mla_score_kernel<<<grid, kWarps * 32, smem, stream>>>(p, scores, Kp, tpb);
  CUDA_CHECK_LAUNCH();
  const int64_t rows = p.S * p.H;
  mla_softmax_kernel<<<unsigned(ceil_div(rows, 8)), 256, 0, stream>>>(scores, rows, Kp);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dsa::ops::cuda::detail
