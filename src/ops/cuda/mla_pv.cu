// sparse_mla_decode, part 2 and entry point: o_lat = bf16(Σ_j p_j · c_j) by bf16 MMA over gathered
// latent rows (dequantised, transposed into shared memory), split over keys when the batch is small.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "ops/cuda/mla.cuh"

namespace dsa::ops::cuda {
namespace {
using namespace detail;

constexpr int kWarps = 8;   // 128 heads per block
constexpr int kDims = 64;   // latent dims per block
constexpr int kKeys = 64;   // keys per tile
constexpr int kLd = kKeys + 8;

__global__ void __launch_bounds__(kWarps * 32) mla_pv_kernel(SparseMlaDecode p, const uint16_t* P,
                                                             int64_t Kp, int splits, int tiles_per_split,
                                                             float* partial) {
  __shared__ __align__(16) uint16_t ct[kDims * kLd];  // [dim][key]
  const int64_t L = p.layout.kv_lora;
  const int64_t c_base = int64_t(blockIdx.x) * kDims, h_base = int64_t(blockIdx.y) * kWarps * 16;
  const int64_t s = blockIdx.z / splits, split = blockIdx.z % splits;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
  const bool active = h_base + warp * 16 < p.H;
  const int64_t rb = lat_row_bytes(p.layout);
  const int64_t j_begin = split * tiles_per_split * kKeys;
  const int64_t j_end = imin(Kp, j_begin + int64_t(tiles_per_split) * kKeys);
  float acc[8][4] = {};
  const uint16_t* prow = P + (s * p.H + h_base + warp * 16 + g) * Kp + 2 * t4;
  for (int64_t j0 = j_begin; j0 < j_end; j0 += kKeys) {
    __syncthreads();
    {  // 256 threads: key = tid / 4, 16 dims each.
      const int key = threadIdx.x >> 2, q = threadIdx.x & 3;
      const int64_t j = j0 + key;
      int32_t row = j < p.K ? p.idx[s * p.K + j] : -1;
      if (row >= p.N) row = -1;
      float v[16];
      if (row >= 0) {
        const uint8_t* src = p.cache + int64_t(row) * rb;
        const int64_t c0 = c_base + q * 16;
        float sc;
        memcpy(&sc, src + lat_scale_off(p.layout) + 4 * (c0 / kBlock), 4);
#pragma unroll
        for (int w4 = 0; w4 < 4; ++w4) {
          const uint32_t w = *reinterpret_cast<const uint32_t*>(src + c0 + 4 * w4);
#pragma unroll
          for (int b = 0; b < 4; ++b) v[4 * w4 + b] = fp82f((w >> (8 * b)) & 255u) * sc;
        }
      } else {
#pragma unroll
        for (int i = 0; i < 16; ++i) v[i] = 0.0f;
      }
#pragma unroll
      for (int i = 0; i < 16; ++i) ct[(q * 16 + i) * kLd + key] = f2bf(v[i]);
    }
    __syncthreads();
    if (!active) continue;
#pragma unroll
    for (int k0 = 0; k0 < kKeys; k0 += 16) {
      const uint16_t* pa = prow + j0 + k0;
      const uint32_t a0 = *reinterpret_cast<const uint32_t*>(pa);
      const uint32_t a1 = *reinterpret_cast<const uint32_t*>(pa + 8 * Kp);
      const uint32_t a2 = *reinterpret_cast<const uint32_t*>(pa + 8);
      const uint32_t a3 = *reinterpret_cast<const uint32_t*>(pa + 8 * Kp + 8);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        const uint16_t* b = ct + (nt * 8 + g) * kLd + k0 + 2 * t4;
        mma_bf16(acc[nt], a0, a1, a2, a3, *reinterpret_cast<const uint32_t*>(b),
                 *reinterpret_cast<const uint32_t*>(b + 8));
      }
    }
  }
  if (!active) return;
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int64_t h = h_base + warp * 16 + g + (r >> 1) * 8;
      const int64_t c = c_base + nt * 8 + 2 * t4 + (r & 1);
      const int64_t o = (s * p.H + h) * L + c;
      if (splits == 1)
        p.o_lat[o].bits = f2bf(acc[nt][r]);
      else
        partial[split * p.S * p.H * L + o] = acc[nt][r];
    }
  }
}

__global__ void mla_reduce_kernel(const float* partial, bf16* o, int64_t n, int splits) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float acc = 0.0f;
  for (int sp = 0; sp < splits; ++sp) acc += partial[sp * n + i];
  o[i].bits = f2bf(acc);
}

}  // namespace

void sparse_mla_decode(const SparseMlaDecode& p, cudaStream_t stream) {
  const int64_t L = p.layout.kv_lora, R = p.layout.rope;
  DSA_CUDA_REQUIRE(p.S > 0 && p.H > 0 && p.N > 0 && p.K > 0 && L > 0 && R >= 0,
                   "sparse_mla_decode: bad dims");
  DSA_CUDA_REQUIRE(p.q_abs && p.cache && p.idx && p.o_lat && (R == 0 || p.q_pe),
                   "sparse_mla_decode: null pointer");
  DSA_CUDA_REQUIRE(L % kDims == 0 && R % 16 == 0 && p.H % 16 == 0 && lat_row_bytes(p.layout) % 4 == 0,
                   "sparse_mla_decode: needs kv_lora % 64 == 0, rope % 16 == 0, H % 16 == 0");
  DSA_CUDA_REQUIRE(p.S <= 65535, "sparse_mla_decode: S > 65535");
  const int kern = mla_options().kernel;  // 1: skip the warp-specialised kernel, 2: also the fused one
  const bool no_ws = kern >= 1, no_fused = kern >= 2;
  if (!no_ws && mla_ws(p, stream)) return;         // V3.2 layout on sm_90: wgmma, warp-specialised
  if (!no_fused && mla_fused(p, stream)) return;   // V3.2-like layouts: one fused kernel (+ combine)
  const int64_t Kp = mla_kpad(p.K), tiles = Kp / kKeys;
  const int64_t hg = ceil_div(p.H, kWarps * 16), base = (L / kDims) * hg * p.S;
  int64_t splits = batch_invariant() ? 1 : std::min<int64_t>(tiles, std::max<int64_t>(1, ceil_div(132 * 2, base)));
  const int tps = int(ceil_div(tiles, splits));
  splits = ceil_div(tiles, tps);
  const size_t score_bytes = size_t(p.S * p.H * Kp) * 2;
  const size_t part_bytes = splits > 1 ? size_t(splits * p.S * p.H * L) * 4 : 0;
  uint8_t* ws = static_cast<uint8_t*>(workspace(score_bytes + part_bytes + 256, stream));
  uint16_t* scores = reinterpret_cast<uint16_t*>(ws);
  float* partial = reinterpret_cast<float*>(ws + (score_bytes + 255) / 256 * 256);
  mla_scores_softmax(p, scores, Kp, stream);
  const dim3 grid(unsigned(L / kDims), unsigned(hg), unsigned(p.S * splits));
  mla_pv_kernel<<<grid, kWarps * 32, 0, stream>>>(p, scores, Kp, int(splits), tps, partial);
  CUDA_CHECK_LAUNCH();
  if (splits > 1) {
    const int64_t n = p.S * p.H * L;
    mla_reduce_kernel<<<unsigned(ceil_div(n, 256)), 256, 0, stream>>>(partial, p.o_lat, n, int(splits));
    CUDA_CHECK_LAUNCH();
  }
}

namespace {
std::atomic<bool>& batch_invariant_flag() {
  static std::atomic<bool> f{[] {
    const char* v = std::getenv("DSA_BATCH_INVARIANT");
    return v && std::strcmp(v, "0") != 0 && *v;
  }()};
  return f;
}
}  // namespace

bool batch_invariant() { return batch_invariant_flag().load(std::memory_order_relaxed); }
void set_batch_invariant(bool on) { batch_invariant_flag().store(on); }

MlaOptions& mla_options() {
  static MlaOptions o = [] {
    MlaOptions m;
    if (const char* k = std::getenv("DSA_MLA_KERNEL"))
      m.kernel = std::strcmp(k, "fused") == 0 ? 1 : std::strcmp(k, "twopass") == 0 ? 2 : 0;
    if (const char* n = std::getenv("DSA_MLA_SPLITS")) m.splits = std::max<int64_t>(0, std::atoll(n));
    return m;
  }();
  return o;
}

}  // namespace dsa::ops::cuda
