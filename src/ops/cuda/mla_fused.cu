// sparse_mla_decode, fused split-K flash-decoding kernel: gather FP8 latent rows (cp.async), dequantise
// once per 32-key tile into shared memory, scores -> online softmax -> P·V by bf16 MMA, 64 heads per CTA.
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "ops/cuda/mla.cuh"

namespace dsa::ops::cuda::detail {
namespace {

constexpr int kHeads = 64;  // heads per CTA: 4 head-warps x 16 (MMA M), each with 2 dim-half warps
constexpr int kKeys = 32;   // keys per tile
constexpr int kThreads = 256;

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return uint32_t(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                        uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                          uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
template <int B>
__device__ __forceinline__ void cp_async(uint32_t dst, const void* src) {
  if constexpr (B == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src));
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(dst), "l"(src), "n"(B));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n"); }
__device__ __forceinline__ void cp_wait1() { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }
__device__ __forceinline__ void pair_bar(int id) {
  asm volatile("bar.sync %0, 64;\n" ::"r"(id) : "memory");
}

template <int L, int R>
struct Cfg {
  static constexpr int D = L + R, LD = D + 8;             // bf16 tile row stride (odd x 16 B)
  static constexpr int NB = (L + 127) / 128;
  static constexpr int RB = L + 4 * NB + 2 * R;          // cache row bytes
  static constexpr int RBS = (RB + 15) / 16 * 16;        // staged row stride
  static constexpr int CP = RB % 16 == 0 ? 16 : 4;       // cp.async chunk
  static constexpr int T = D / 16, KA = T / 2;           // k-steps; dim-half 0 takes [0, KA)
  static constexpr int NT = L / 2 / 8;                   // P·V n-tiles per warp
  static constexpr size_t kQ = size_t(kHeads) * LD * 2, kK = size_t(kKeys) * LD * 2;
  static constexpr size_t kStage = size_t(kKeys) * RBS, kX = 4 * 3 * 512 * 4;
  static constexpr size_t smem = kQ + kK + 2 * kStage + kX + kKeys * 4;  // + row ids, at launch
  static_assert(L % 64 == 0 && R % 16 == 0 && RB % 4 == 0 && KA <= L / 16 && NT % 2 == 0);
};

// grid: (splits, ceil(H/64), S). Split `sp` covers tiles [sp*tps, (sp+1)*tps) of 32 keys.
// splits == 1: o_lat = bf16(acc / l). Otherwise partial acc (fp32, unnormalised) and (m, l) per row.
template <int L, int R>
__global__ void __launch_bounds__(kThreads, 1)
    mla_fused_kernel(SparseMlaDecode p, int tps, int splits, float* part, float2* ml) {
  using C = Cfg<L, R>;
  extern __shared__ __align__(128) uint8_t sm[];
  uint16_t* qs = reinterpret_cast<uint16_t*>(sm);
  uint16_t* ks = reinterpret_cast<uint16_t*>(sm + C::kQ);
  uint8_t* stg = sm + C::kQ + C::kK;
  float* xch = reinterpret_cast<float*>(stg + 2 * C::kStage);
  int32_t* kval = reinterpret_cast<int32_t*>(xch + C::kX / 4);  // [kKeys] valid flags of ks
  int32_t* rows = kval + kKeys;  // [tps * kKeys] row ids of this split (-1 = no key)
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int hw = warp & 3, dh = warp >> 2, g = lane >> 2, t4 = lane & 3;
  const int64_t s = blockIdx.z, h0 = int64_t(blockIdx.y) * kHeads, sp = blockIdx.x;
  const int64_t K = p.K, N = p.N, H = p.H;
  const int64_t tile0 = sp * tps, ntiles = cdiv(K, kKeys);
  const int64_t tile1 = imin(ntiles, tile0 + tps);

  for (int64_t i = tid; i < (tile1 - tile0) * kKeys; i += kThreads) {
    const int64_t j = tile0 * kKeys + i;
    const int32_t r = j < K ? p.idx[s * K + j] : -1;
    rows[i] = r < N ? r : -1;
  }
  __syncthreads();
  auto issue = [&](int64_t tile, int buf) {
    // Each thread reads the row ids it needs itself (L1 hits): no extra barrier per tile.
    constexpr int CPR = C::RB / C::CP;
    uint8_t* dst = stg + buf * C::kStage;
    for (int c = tid; c < kKeys * CPR; c += kThreads) {
      const int key = c / CPR, off = (c % CPR) * C::CP;
      const int32_t r = rows[(tile - tile0) * kKeys + key];
      if (r >= 0)
        cp_async<C::CP>(smem_u32(dst + key * C::RBS + off), p.cache + int64_t(r) * C::RB + off);
    }
  };

  if (tile0 < tile1) issue(tile0, 0);
  cp_commit();
  // Q rows [q_abs ; q_pe] of heads h0.. (zeros past H), 16-byte copies.
  for (int i = tid; i < kHeads * (C::D / 8); i += kThreads) {
    const int r = i / (C::D / 8), c = (i % (C::D / 8)) * 8;
    const int64_t h = h0 + r;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (h < H)
      v = c < L ? *reinterpret_cast<const uint4*>(p.q_abs + (s * H + h) * L + c)
                : *reinterpret_cast<const uint4*>(p.q_pe + (s * H + h) * R + (c - L));
    *reinterpret_cast<uint4*>(qs + r * C::LD + c) = v;
  }

  float acc[C::NT][4];
#pragma unroll
  for (int i = 0; i < C::NT; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;  // rows g and g + 8
  // ldmatrix lane addresses.
  const int mi = lane >> 3, mr = lane & 7;
  const uint32_t qa_addr = smem_u32(qs + (hw * 16 + (mi & 1) * 8 + mr) * C::LD + (mi >> 1) * 8);
  const uint32_t kb_addr = smem_u32(ks + ((mi >> 1) * 8 + mr) * C::LD + (mi & 1) * 8);
  const uint32_t vb_addr = smem_u32(ks + ((mi & 1) * 8 + mr) * C::LD + dh * (L / 2) + (mi >> 1) * 8);
  float* xa = xch + hw * 3 * 512;  // this pair's exchange: [3][16 regs][32 lanes]
  const float sc = p.scale;

  for (int64_t t = tile0; t < tile1; ++t) {
    const int buf = int(t - tile0) & 1;
    if (t + 1 < tile1) issue(t + 1, buf ^ 1);
    cp_commit();
    cp_wait1();
    __syncthreads();  // staged tile t complete; every warp is done with ks of tile t-1
    {
      const uint8_t* st = stg + buf * C::kStage;
      constexpr int UL = L / 8, U = UL + R / 8;
#pragma unroll 3
      for (int u = tid; u < kKeys * U; u += kThreads) {
        const int key = u / U, w = u % U;
        const bool ok = rows[(t - tile0) * kKeys + key] >= 0;
        if (w == 0) kval[key] = ok;
        uint4 o = make_uint4(0, 0, 0, 0);
        const uint8_t* row = st + key * C::RBS;
        if (ok && w < UL) {
          const uint2 b = *reinterpret_cast<const uint2*>(row + 8 * w);
          const float scl = *reinterpret_cast<const float*>(row + L + 4 * ((8 * w) / 128));
          const uint32_t bw[2] = {b.x, b.y};
          uint32_t ow[4];
#pragma unroll
          for (int h2 = 0; h2 < 4; ++h2) {
            const __half2_raw hr =
                __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(bw[h2 >> 1] >> (16 * (h2 & 1))), __NV_E4M3);
            const float2 f = __half22float2(__half2(hr));
            ow[h2] = pack_bf16(f.x * scl, f.y * scl);
          }
          o = make_uint4(ow[0], ow[1], ow[2], ow[3]);
        } else if (ok) {
          const uint32_t* src = reinterpret_cast<const uint32_t*>(row + L + 4 * C::NB + 16 * (w - UL));
          o = make_uint4(src[0], src[1], src[2], src[3]);
        }
        *reinterpret_cast<uint4*>(ks + key * C::LD + 8 * w) = o;
      }
    }
    __syncthreads();
    // Scores: this warp's share of the 576-dim dot for 16 heads x 32 keys.
    float d1[4][4] = {}, d2[4][4] = {};
    const int kbeg = dh == 0 ? 0 : C::KA, kend = dh == 0 ? C::KA : C::T;
#pragma unroll 2
    for (int k = kbeg; k < kend; ++k) {
      uint32_t a0, a1, a2, a3, b[8];
      ldsm_x4(qa_addr + k * 32, a0, a1, a2, a3);
      ldsm_x4(kb_addr + k * 32, b[0], b[1], b[2], b[3]);
      ldsm_x4(kb_addr + 16 * C::LD * 2 + k * 32, b[4], b[5], b[6], b[7]);
      if (k < L / 16) {
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) mma_bf16(d1[nt], a0, a1, a2, a3, b[2 * nt], b[2 * nt + 1]);
      } else {
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) mma_bf16(d2[nt], a0, a1, a2, a3, b[2 * nt], b[2 * nt + 1]);
      }
    }
    // Exchange partial dots inside the warp pair (same lane <-> same fragment position).
    if (dh == 0) {
#pragma unroll
      for (int i = 0; i < 16; ++i) xa[i * 32 + lane] = d1[i >> 2][i & 3];
    } else {
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        xa[512 + i * 32 + lane] = d1[i >> 2][i & 3];
        xa[1024 + i * 32 + lane] = d2[i >> 2][i & 3];
      }
    }
    pair_bar(1 + hw);
    float sv[4][4];
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const float a = dh == 0 ? d1[i >> 2][i & 3] : xa[i * 32 + lane];
      const float b = dh == 0 ? xa[512 + i * 32 + lane] : d1[i >> 2][i & 3];
      const float r2 = dh == 0 ? xa[1024 + i * 32 + lane] : d2[i >> 2][i & 3];
      const int key = (i >> 2) * 8 + 2 * t4 + (i & 1);
      sv[i >> 2][i & 3] = kval[key] ? rbf(rbf(rbf(a + b) + rbf(r2)) * sc) : -INFINITY;
    }
    // Online softmax (rows g: regs 0,1; g + 8: regs 2,3).
    float tm0 = -INFINITY, tm1 = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      tm0 = fmaxf(tm0, fmaxf(sv[nt][0], sv[nt][1]));
      tm1 = fmaxf(tm1, fmaxf(sv[nt][2], sv[nt][3]));
    }
#pragma unroll
    for (int o = 1; o < 4; o <<= 1) {
      tm0 = fmaxf(tm0, __shfl_xor_sync(0xffffffffu, tm0, o));
      tm1 = fmaxf(tm1, __shfl_xor_sync(0xffffffffu, tm1, o));
    }
    const float n0 = fmaxf(m0, tm0), n1 = fmaxf(m1, tm1);
    const float r0 = n0 == -INFINITY ? 0.0f : n0, r1 = n1 == -INFINITY ? 0.0f : n1;
    const float al0 = __expf(m0 - r0), al1 = __expf(m1 - r1);
    m0 = n0;
    m1 = n1;
    uint32_t pa[4][2];
    float ps0 = 0.0f, ps1 = 0.0f;
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      const float e0 = __expf(sv[nt][0] - r0), e1 = __expf(sv[nt][1] - r0);
      const float e2 = __expf(sv[nt][2] - r1), e3 = __expf(sv[nt][3] - r1);
      ps0 += e0 + e1;
      ps1 += e2 + e3;
      pa[nt][0] = pack_bf16(e0, e1);
      pa[nt][1] = pack_bf16(e2, e3);
    }
    l0 = l0 * al0 + ps0;
    l1 = l1 * al1 + ps1;
#pragma unroll
    for (int i = 0; i < C::NT; ++i) {
      acc[i][0] *= al0;
      acc[i][1] *= al0;
      acc[i][2] *= al1;
      acc[i][3] *= al1;
    }
    // P·V over this warp's L/2 latent dims.
#pragma unroll
    for (int kk = 0; kk < 2; ++kk) {
      const uint32_t a0 = pa[2 * kk][0], a1 = pa[2 * kk][1], a2 = pa[2 * kk + 1][0],
                     a3 = pa[2 * kk + 1][1];
      const uint32_t vrow = vb_addr + kk * 16 * C::LD * 2;
#pragma unroll
      for (int np = 0; np < C::NT / 2; ++np) {
        uint32_t b0, b1, b2, b3;
        ldsm_x4_t(vrow + np * 32, b0, b1, b2, b3);
        mma_bf16(acc[2 * np], a0, a1, a2, a3, b0, b1);
        mma_bf16(acc[2 * np + 1], a0, a1, a2, a3, b2, b3);
      }
    }
  }
#pragma unroll
  for (int o = 1; o < 4; o <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, o);
    l1 += __shfl_xor_sync(0xffffffffu, l1, o);
  }
  const int64_t ha = h0 + hw * 16 + g, hb = ha + 8;
  const int64_t cbase = dh * (L / 2) + 2 * t4;
  if (splits == 1) {
    const float i0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, i1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
#pragma unroll
    for (int nt = 0; nt < C::NT; ++nt) {
      const int64_t c = cbase + nt * 8;
      if (ha < H)
        *reinterpret_cast<uint32_t*>(&p.o_lat[(s * H + ha) * L + c]) =
            pack_bf16(acc[nt][0] * i0, acc[nt][1] * i0);
      if (hb < H)
        *reinterpret_cast<uint32_t*>(&p.o_lat[(s * H + hb) * L + c]) =
            pack_bf16(acc[nt][2] * i1, acc[nt][3] * i1);
    }
  } else {
    const int64_t rowa = (sp * p.S + s) * H + ha, rowb = rowa + 8;
#pragma unroll
    for (int nt = 0; nt < C::NT; ++nt) {
      const int64_t c = cbase + nt * 8;
      if (ha < H) *reinterpret_cast<float2*>(part + rowa * L + c) = make_float2(acc[nt][0], acc[nt][1]);
      if (hb < H) *reinterpret_cast<float2*>(part + rowb * L + c) = make_float2(acc[nt][2], acc[nt][3]);
    }
    if (dh == 0 && t4 == 0) {
      if (ha < H) ml[rowa] = make_float2(m0, l0);
      if (hb < H) ml[rowb] = make_float2(m1, l1);
    }
  }
}

// o[s,h,:] = bf16( Σ_i acc_i e^{m_i - M} / Σ_i l_i e^{m_i - M} ); a row with no key -> zeros.
// grid (rows, L / 256), 64 threads x 4 dims; split loads batched 8 deep.
__global__ void __launch_bounds__(64) mla_combine_kernel(const float* part, const float2* ml, bf16* o,
                                                         int64_t rows, int64_t L, int splits) {
  const int64_t r = blockIdx.x;
  __shared__ float wgt[128];
  __shared__ float inv;
  if (threadIdx.x < 32) {
    float M = -INFINITY;
    for (int i = threadIdx.x; i < splits; i += 32) M = fmaxf(M, ml[i * rows + r].x);
    M = warp_max(M);
    float den = 0.0f;
    for (int i = threadIdx.x; i < splits; i += 32) {
      const float2 v = ml[i * rows + r];
      const float w = v.x == -INFINITY ? 0.0f : __expf(v.x - M);
      wgt[i] = w;
      den += v.y * w;
    }
    den = warp_sum(den);
    if (threadIdx.x == 0) inv = den > 0.0f ? 1.0f / den : 0.0f;
  }
  __syncthreads();
  const int64_t c = int64_t(blockIdx.y) * 256 + 4 * threadIdx.x;
  if (c >= L) return;
  const float* src = part + r * L + c;
  const int64_t stride = rows * L;
  float4 a = make_float4(0, 0, 0, 0);
  int i = 0;
  for (; i + 8 <= splits; i += 8) {
    float4 v[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) v[u] = __ldcs(reinterpret_cast<const float4*>(src + (i + u) * stride));
#pragma unroll
    for (int u = 0; u < 8; ++u) {
      const float w = wgt[i + u];  // 0 for a split without keys (its acc is 0 too)
      a.x += v[u].x * w;
      a.y += v[u].y * w;
      a.z += v[u].z * w;
      a.w += v[u].w * w;
    }
  }
  for (; i < splits; ++i) {
    const float4 v = __ldcs(reinterpret_cast<const float4*>(src + i * stride));
    const float w = wgt[i];
    a.x += v.x * w;
    a.y += v.y * w;
    a.z += v.z * w;
    a.w += v.w * w;
  }
  uint2 out;
  out.x = pack_bf16(a.x * inv, a.y * inv);
  out.y = pack_bf16(a.z * inv, a.w * inv);
  *reinterpret_cast<uint2*>(o + r * L + c) = out;
}

template <int L, int R>
void launch(const SparseMlaDecode& p, cudaStream_t stream) {
  using C = Cfg<L, R>;
  const int64_t hg = cdiv(p.H, kHeads), tiles = cdiv(p.K, kKeys), work = p.S * hg;
  // Split the keys so that ~1 wave of CTAs fills the chip; mla_options().splits overrides.
  const int64_t forced = mla_options().splits;
  int64_t splits = 1;
  if (forced > 0) splits = std::min<int64_t>(tiles, std::min<int64_t>(128, forced));
  else if (work < 100 && !batch_invariant()) splits = std::min<int64_t>(tiles, std::min<int64_t>(128, cdiv(132, work)));
  const int64_t max_tps = int64_t(227 * 1024 - C::smem) / (kKeys * 4);  // row ids must fit
  splits = std::max<int64_t>(splits, cdiv(tiles, max_tps));
  DSA_CUDA_REQUIRE(splits <= 128, "sparse_mla_decode: K too large");
  const int64_t tps = cdiv(tiles, splits);
  splits = cdiv(tiles, tps);
  const size_t smem = C::smem + size_t(tps) * kKeys * 4;
  static size_t configured = 0;
  if (smem > configured) {
    CUDA_CHECK(cudaFuncSetAttribute(mla_fused_kernel<L, R>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    configured = smem;
  }
  float* part = nullptr;
  float2* ml = nullptr;
  if (splits > 1) {
    const size_t pb = size_t(splits * p.S * p.H * L) * 4, mb = size_t(splits * p.S * p.H) * 8;
    uint8_t* ws = static_cast<uint8_t*>(workspace(pb + mb + 256, stream));
    part = reinterpret_cast<float*>(ws);
    ml = reinterpret_cast<float2*>(ws + (pb + 255) / 256 * 256);
  }
  const dim3 grid(unsigned(splits), unsigned(hg), unsigned(p.S));
  mla_fused_kernel<L, R><<<grid, kThreads, smem, stream>>>(p, int(tps), int(splits), part, ml);
  CUDA_CHECK_LAUNCH();
  if (splits > 1) mla_combine(part, ml, p.o_lat, p.S * p.H, L, int(splits), stream);
}

}  // namespace

void mla_combine(const float* part, const float2* ml, bf16* o, int64_t rows, int64_t L, int splits,
                 cudaStream_t stream) {
  DSA_CUDA_REQUIRE(splits >= 1 && splits <= 128 && L % 4 == 0, "mla_combine: bad splits / L");
  const dim3 cg(unsigned(rows), unsigned(cdiv(L, 256)));
  mla_combine_kernel<<<cg, 64, 0, stream>>>(part, ml, o, rows, L, splits);
  CUDA_CHECK_LAUNCH();
}

bool mla_fused(const SparseMlaDecode& p, cudaStream_t stream) {
  const int64_t L = p.layout.kv_lora, R = p.layout.rope;
  if (L == 512 && R == 64) return launch<512, 64>(p, stream), true;
  if (L == 256 && R == 32) return launch<256, 32>(p, stream), true;
  if (L == 128 && R == 16) return launch<128, 16>(p, stream), true;
  return false;
}

}  // namespace dsa::ops::cuda::detail
