// sparse_mla_decode for the V3.2 latent layout (kv_lora 512, rope 64, 656-byte FP8 rows) on Hopper
// (sm_90a): a warp-specialised split-K flash-decoding kernel with wgmma, 64 heads x 64 keys per tile.
//
// CTA = 384 threads = 3 warpgroups, one (query s, 64-head group, key split) per CTA:
//   WG2 producer (setmaxnreg 120): per tile, 16-byte ld.global of the FP8 rows straight into
//       registers (issued before waiting for a free stage; the rows of the next tile are prefetched
//       into L2 with cp.async.bulk.prefetch), dequantises them to bf16 (exactly bf16(fp8 * scale))
//       into a 2-stage bf16 tile ring in the wgmma 128-byte-swizzled layout, copies the rope part with
//       cp.async, writes a 64-bit "valid key" mask per stage.
//   WG0 (setmaxnreg 224): S = Q K^T (36 x wgmma m64n64k16, nope and rope accumulated apart),
//       masking, online softmax (the score roundings use packed bf16x2 conversions: single fp32->bf16
//       conversions were its bottleneck), P (bf16) and the per-row rescale to shared memory,
//       O[:, 0:256] += P V (4 x wgmma m64n256k16).
//   WG1 (setmaxnreg 160): O[:, 256:512] += P V (4 x wgmma m64n256k16).
// Numerics are those of mla_fused.cu (and the reference): score = bf16(bf16(bf16(nope) + bf16(rope))
// * scale), -inf for idx < 0, idx >= N and padding keys; p = bf16(exp(s - m)); l sums the unrounded
// exps; o = bf16(acc * (1 / l)); a row without keys gives zeros. Splits > 1 write fp32 partials
// plus (m, l) and mla_combine() (mla_fused.cu) merges them.
//
// Pipeline protocol (n = tiles of this CTA >= 1; tile i uses stage b = i & 1, u = i >> 1):
//   full[b]  mbarrier, 128 arrivals: every producer thread after its st.shared / cp.async of tile i
//            (cp.async.wait_all + fence.proxy.async first). WG0 and WG1 wait parity (u & 1).
//   empty[b] mbarrier, 256 arrivals: every WG0 / WG1 thread once its wgmma reading stage b retired
//            (wgmma.wait_group). The producer waits parity (u & 1) ^ 1 before refilling stage b
//            (for u == 0 that is the phase "before" the first one, which counts as complete). WG0
//            never arrives for the last tile, which nobody waits for; a phase cannot mix tiles
//            i and i + 2 because WG1's P V of i + 2 needs kBarPReady(i + 2), after WG0's arrival
//            for i, and WG0's arrival for i + 2 needs kBarPFree(i + 2), after WG1's arrival for i.
//   named barriers (id 0 is __syncthreads, used once before the role split):
//     kBarQ      Q tile loaded (cp.async) by WG0: bar.sync of WG0's 128 threads.
//     kBarPReady P(i) and alpha(i) in shared memory: WG0 (after writing them) and WG1 bar.sync,
//                256 threads, n times.
//     kBarPFree  WG1's P V of tile i retired: WG1 bar.arrive for i < n - 1, WG0 bar.sync before
//                writing P(i + 1); 256 threads, n - 1 times.
//     kBarEpi    WG0 wrote the final l, m per row: both bar.sync, 256 threads.
//   WG0's wgmma order: QK(0); then for tile i >= 1: PV0(i - 1), QK(i), wait_group 1 (PV0(i - 1)
//   retired: arrive empty of tile i - 1), wait_group 0 (QK(i)); after the loop PV0(n - 1). No wgmma
//   is in flight across a loop iteration (ptxas serialises every wgmma otherwise, because the
//   accumulators are touched between issue and wait).
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "ops/cuda/mla.cuh"

namespace dsa::ops::cuda::detail {
namespace {

constexpr int kL = 512, kR = 64, kD = kL + kR;   // latent dims, rope dims, q/k dims
constexpr int kRowBytes = kL + 4 * (kL / 128) + 2 * kR;  // 656
constexpr int kScaleOff = kL, kRopeOff = kL + 16;
constexpr int kHeads = 64;                        // heads per CTA = wgmma M
constexpr int kKeys = 64;                         // keys per tile = N of the score wgmma
constexpr int kThreads = 384;
constexpr int kRegion = 64 * 128;                 // 64 rows x 128 B (64 bf16): one 64-dim column block
constexpr int kRegions = kD / 64;                 // 9 (8 latent + 1 rope)
constexpr int kTile = kRegions * kRegion;         // 73728: a Q tile or a K tile
// Shared memory, offsets from the 1024-aligned base.
constexpr int kOffQ = 0;
constexpr int kOffK = kOffQ + kTile;              // 2 stages
constexpr int kOffP = kOffK + 2 * kTile;          // P: 64 heads x 64 keys bf16, 128B-swizzled K-major
constexpr int kOffBar = kOffP + kHeads * 128;     // full[2], empty[2] (8 B each)
constexpr int kOffMask = kOffBar + 32;            // uint64 valid-key mask per stage
constexpr int kOffAlpha = kOffMask + 16;          // float[64]: per-row rescale of the current tile
constexpr int kOffL = kOffAlpha + 4 * kHeads;     // float[64]: final l
constexpr int kOffM = kOffL + 4 * kHeads;         // float[64]: final m
constexpr int kSmemUsed = kOffM + 4 * kHeads;
constexpr int kSmemBytes = kSmemUsed + 1024;      // + slack to align the base to 1024
static_assert(kRowBytes == 656 && kRopeOff == 528, "V3.2 latent row layout");
static_assert(kHeads == 64 && kKeys == 64, "region layout assumes 64 rows");
static_assert(kOffK % 1024 == 0 && kOffP % 1024 == 0 && kOffBar % 8 == 0 && kOffMask % 8 == 0);
static_assert(kSmemBytes <= 232448, "over the 227 KB dynamic shared memory limit of sm_90");
// Register split (setmaxnreg): the launch gives 168 per thread (__launch_bounds__(384, 1)).
constexpr int kRegWg0 = 224, kRegWg1 = 160, kRegProd = 120;
static_assert((kRegWg0 + kRegWg1 + kRegProd) * 128 <= 168 * kThreads, "register pool");
static_assert(kRegWg0 % 8 == 0 && kRegWg1 % 8 == 0 && kRegProd % 8 == 0);
enum : int { kBarQ = 1, kBarPReady = 2, kBarPFree = 3, kBarEpi = 4 };

// ---- PTX helpers (sm_90a)
__device__ __forceinline__ uint32_t ws_saddr(const void* p) {
  return uint32_t(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void ws_mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void ws_mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void ws_mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred P1;\nWS_WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
      "@P1 bra.uni WS_DONE;\nbra.uni WS_WAIT;\nWS_DONE:\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void ws_bar_sync(int id, int n) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
__device__ __forceinline__ void ws_bar_arrive(int id, int n) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
__device__ __forceinline__ void ws_fence_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
template <int R>
__device__ __forceinline__ void ws_reg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R));
}
template <int R>
__device__ __forceinline__ void ws_reg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R));
}
__device__ __forceinline__ void ws_wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void ws_wg_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void ws_wg_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from touching wgmma accumulators before the wait that retires them.
template <int N>
__device__ __forceinline__ void ws_fence_regs(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
// wgmma shared-memory descriptor, 128-byte swizzle. K-major tiles: lbo 16 (unused), sbo 1024
// (8-row groups). MN-major (V read as B = [keys x dims]): lbo = 8192 (next 64 dims), sbo = 1024
// (next 8 keys).
// Built as (lo, hi) words: lo = start >> 4 | lbo >> 4 << 16 comes from an opaque register (ws_lo) so
// that the compiler adds the per-k-step offset at the use instead of keeping dozens of precomputed
// 64-bit descriptors alive across the loop.
__device__ __forceinline__ uint32_t ws_lo(uint32_t saddr, uint32_t lbo) {
  uint32_t r = ((saddr & 0x3FFFFu) >> 4) | ((lbo >> 4) << 16);
  asm volatile("" : "+r"(r));
  return r;
}
// An opaque copy: keeps the compiler from hoisting per-iteration address math out of the loops
// (which would pin dozens of registers).
__device__ __forceinline__ uint32_t ws_opaque(uint32_t x) {
  asm volatile("" : "+r"(x));
  return x;
}
__device__ __forceinline__ uint64_t ws_desc_lo(uint32_t lo, uint32_t off, uint32_t sbo) {
  return uint64_t(lo + (off >> 4)) | (uint64_t((sbo >> 4) | (1u << 30)) << 32);
}
// Byte offset of the 16-byte piece `piece` (8 dims; 0..71 over the 576 q/k dims) of row `row` in a
// Q / K tile: 64-dim column block piece / 8, chunk (piece % 8) ^ (row % 8) of the 128-byte row.
__device__ __forceinline__ uint32_t ws_tile_off(int row, int piece) {
  return uint32_t((piece >> 3) * kRegion + row * 128 + (((piece & 7) ^ (row & 7)) << 4));
}
__device__ __forceinline__ void ws_sts128(uint32_t a, uint4 v) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(a), "r"(v.x), "r"(v.y), "r"(v.z),
               "r"(v.w)
               : "memory");
}
__device__ __forceinline__ void ws_sts32(uint32_t a, uint32_t v) {
  asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(a), "r"(v) : "memory");
}
__device__ __forceinline__ uint4 ws_ldg128(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}
// 0.0f when !pred, else the fp32 at p (predicated load: nothing to wait for at the select).
__device__ __forceinline__ float ws_ldg_f32_or0(const void* p, bool pred) {
  float v;
  asm volatile(
      "{\n.reg .pred q;\nsetp.ne.b32 q, %2, 0;\nmov.b32 %0, 0;\n@q ld.global.nc.f32 %0, [%1];\n}\n"
      : "=f"(v)
      : "l"(p), "r"(uint32_t(pred)));
  return v;
}
__device__ __forceinline__ void ws_cp_async16(uint32_t dst, const void* src, uint32_t src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void ws_cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
__device__ __forceinline__ void ws_prefetch_l2(const void* p, uint32_t bytes) {
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(bytes) : "memory");
}
__device__ __forceinline__ uint32_t ws_prmt(uint32_t a, uint32_t sel) {
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(0u), "r"(sel));
  return r;
}
// {hi, lo} -> bf16x2 (RNE each): one F2FP instead of two single conversions.
__device__ __forceinline__ uint32_t ws_pack_bf16x2(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
// Lane-wise bf16 add, correctly rounded. For bf16 inputs this equals bf16(fp32(a + b)) (the
// reference's rbf(rbf(x) + rbf(y))): the fp32 sum is exact unless the exponents differ by >= 16, and
// then the smaller term is far below half a bf16 ulp of the result either way.
__device__ __forceinline__ uint32_t ws_add_bf16x2(uint32_t a, uint32_t b) {
  uint32_t r;
  asm("add.rn.bf16x2 %0, %1, %2;\n" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
__device__ __forceinline__ uint32_t ws_mul_bf16x2(uint32_t a, uint32_t b) {
  uint32_t r;
  asm("mul.rn.bf16x2 %0, %1, %2;\n" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

// 16 e4m3 values times one fp32 scale -> 16 bf16 = bf16(fp8 * scale) (two 8-value halves), valid
// when ws_scale_fast(scale) (the scale times 2^120 is a finite bf16 value, e.g. any power of two in
// [2^-117, 2^7], or 1): the e4m3 bits placed in a bf16 ((b & 0x7f) << 4, sign at bit 15) are exactly
// fp8 * 2^-120 (e4m3 subnormals become bf16 subnormals), so one correctly rounded bf16 multiply by
// scale * 2^120 gives bf16(fp8 * scale). NaN codes (never written by the quantiser) are not
// preserved. Other scales: see ws_fixup.
__device__ __forceinline__ bool ws_scale_fast(float scale) {
  const float scp = scale * 0x1p120f;
  return scale == 0.0f || ((__float_as_uint(scp) & 0xffffu) == 0 && fabsf(scp) <= 3.4028234e38f &&
                           fabsf(scale) >= 0x1p-117f);
}
// bf16x2 multiplier of ws_dequant16: (scale * 2^120) in both halves.
__device__ __forceinline__ uint32_t ws_scale2(float scale) {
  const uint32_t sb = __float_as_uint(scale * 0x1p120f);
  return (sb >> 16) | (sb & 0xffff0000u);
}
__device__ __forceinline__ void ws_dequant16(uint4 v, uint32_t s2, uint4& lo, uint4& hi) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
  uint32_t o[8];
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    // prmt 0x9180: [b0, sign(b0) x8, b1, sign(b1) x8]; 0xb3a2: the same for bytes 2, 3.
    o[2 * q] = ws_mul_bf16x2((ws_prmt(w[q], 0x9180u) << 4) & 0x87f087f0u, s2);
    o[2 * q + 1] = ws_mul_bf16x2((ws_prmt(w[q], 0xb3a2u) << 4) & 0x87f087f0u, s2);
  }
  lo = make_uint4(o[0], o[1], o[2], o[3]);
  hi = make_uint4(o[4], o[5], o[6], o[7]);
}
// 8 bf16 values x (exact e4m3 values) -> bf16(fp32(x) * scale), the formula of mla_fused.cu.
__device__ __forceinline__ uint4 ws_rescale8(uint4 v, float scale) {
  uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int q = 0; q < 4; ++q)
    w[q] = pack_bf16(__uint_as_float(w[q] << 16) * scale, __uint_as_float(w[q] & 0xffff0000u) * scale);
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// ---- wgmma wrappers (bf16 x bf16 -> fp32)
// S(64x64 fp32) = Q(64x16) * K(64 x 16)^T (scale-d = 0: d is write-only, so the registers are free before).
__device__ __forceinline__ void ws_mma_qk0(float (&d)[32], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      :
        "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3]), "=f"(d[4]), "=f"(d[5]), "=f"(d[6]), "=f"(d[7]),
        "=f"(d[8]), "=f"(d[9]), "=f"(d[10]), "=f"(d[11]), "=f"(d[12]), "=f"(d[13]), "=f"(d[14]), "=f"(d[15]),
        "=f"(d[16]), "=f"(d[17]), "=f"(d[18]), "=f"(d[19]), "=f"(d[20]), "=f"(d[21]), "=f"(d[22]), "=f"(d[23]),
        "=f"(d[24]), "=f"(d[25]), "=f"(d[26]), "=f"(d[27]), "=f"(d[28]), "=f"(d[29]), "=f"(d[30]), "=f"(d[31])
      : "l"(da), "l"(db), "r"(0u)
      : "memory");
}

// S(64x64 fp32) (+)= Q(64x16 bf16, K-major smem) * K(64 keys x 16, K-major smem)^T; scale_d = 0 overwrites.
__device__ __forceinline__ void ws_mma_qk(float (&d)[32], uint64_t da, uint64_t db, uint32_t scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      :
        "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "r"(scale_d)
      : "memory");
}

// O(64x256 fp32) (+)= P(64x16 bf16, K-major smem) * V(16 keys x 256 dims, MN-major smem).
__device__ __forceinline__ void ws_mma_pv_ss(float (&d)[128], uint64_t da, uint64_t db, uint32_t scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
      "}, %128, %129, p, 1, 1, 0, 1;\n}\n"
      :
        "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
        "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
        "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(da), "l"(db), "r"(scale_d)
      : "memory");
}

// O half (dims 256 half ..) of rows ra, ra + 8 of this thread to o_lat (splits == 1: bf16(acc / l))
// or to the fp32 partials of split sp.
// (s, h0, sp) are re-read from blockIdx here rather than kept in registers across the main loop.
__device__ __forceinline__ void ws_epilogue(const SparseMlaDecode& p, const float (&o)[128], int half,
                                            int ra, int lane, int splits, float l0, float l1,
                                            float* part) {
  const int64_t s = blockIdx.z, h0 = int64_t(blockIdx.y) * kHeads, sp = blockIdx.x;
  const int64_t H = p.H, ha = h0 + ra, hb = ha + 8, cbase = half * (kL / 2) + 2 * (lane & 3);
  if (splits == 1) {
    const float i0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, i1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
    bf16* oa = p.o_lat + (s * H + ha) * kL + cbase;
    bf16* ob = p.o_lat + (s * H + hb) * kL + cbase;
#pragma unroll
    for (int c = 0; c < 32; ++c) {
      if (ha < H) *reinterpret_cast<uint32_t*>(oa + 8 * c) = pack_bf16(o[4 * c] * i0, o[4 * c + 1] * i0);
      if (hb < H) *reinterpret_cast<uint32_t*>(ob + 8 * c) = pack_bf16(o[4 * c + 2] * i1, o[4 * c + 3] * i1);
    }
  } else {
    const int64_t rowa = (sp * p.S + s) * H + ha;
    float* pa = part + rowa * kL + cbase;
    float* pb = part + (rowa + 8) * kL + cbase;
#pragma unroll
    for (int c = 0; c < 32; ++c) {
      if (ha < H) *reinterpret_cast<float2*>(pa + 8 * c) = make_float2(o[4 * c], o[4 * c + 1]);
      if (hb < H) *reinterpret_cast<float2*>(pb + 8 * c) = make_float2(o[4 * c + 2], o[4 * c + 3]);
    }
  }
}

// Q tile (64 heads of query s from h0; zeros past H) into the swizzled layout by WG0 with cp.async
// (all in flight at once, no registers): 64 rows x 72 pieces of 16 B, 36 per thread.
__device__ __forceinline__ void ws_load_q(const SparseMlaDecode& p, uint32_t sq, int t128, int64_t s,
                                          int64_t h0) {
  static_assert(kHeads * (kD / 8) == 36 * 128, "Q pieces per WG0 thread");
#pragma unroll 4
  for (int k = 0; k < 36; ++k) {
    const int i = t128 + 128 * k, r = i / 72, c = i % 72;
    const int64_t h = h0 + r;
    const bf16* src = h >= p.H         ? p.q_abs
                      : c < kL / 8     ? p.q_abs + (s * p.H + h) * kL + 8 * c
                                       : p.q_pe + (s * p.H + h) * kR + 8 * (c - kL / 8);
    ws_cp_async16(sq + ws_tile_off(r, c), src, h < p.H ? 16u : 0u);
  }
}

// Row id (-1: no key) of key `lane % 16` of producer warp pw in tile t.
__device__ __forceinline__ int32_t ws_row(const SparseMlaDecode& p, int64_t t, int pw, int lane) {
  const int64_t j = t * kKeys + pw * 16 + (lane & 15);
  int32_t r = -1;
  if (j < p.K) {
    r = __ldg(p.idx + blockIdx.z * p.K + j);
    if (int64_t(r) >= p.N) r = -1;
  }
  return r < 0 ? -1 : r;
}

// One producer warp's share of a tile in registers: 16 keys (tile rows 16 pw + j) as 8 pairs
// kp (j = 2 kp + hk, hk = lane & 1). Lane (hk, r0 = (lane >> 1) / 4, u = (lane >> 1) % 4) owns the
// fixed 16-byte slots 2u + hk (lo) and 2u + 1 - hk (hi) of column blocks r0 and 4 + r0 of its key
// rows, so every store address is a per-lane base plus an immediate; it therefore loads, for pair kp,
// the 16 dims [64 r0 + 16 (u ^ (kp % 4)), + 16) (+ 256 for the second block): with the 128-byte
// swizzle (chunk c of row rt at c ^ (rt % 8), rt % 8 = 2 (kp % 4) + hk) those land exactly in the
// lane's slots. Scales: lane L holds those of key L % 16, blocks L / 16 and 2 + L / 16 (sc0, sc1);
// the converting lanes fetch theirs (block r0 / 2 (+ 2)) with one shuffle each. Invalid keys
// (row < 0) read row 0 and get scale 0.
struct WsRegs {
  uint4 d[8][2];
  float sc0, sc1;
};
__device__ __forceinline__ void ws_issue(WsRegs& g, const uint8_t* cache, int32_t rowv, int lane) {
  const int hk = lane & 1, r0 = (lane >> 3) & 3, u = (lane >> 1) & 3;
#pragma unroll
  for (int kp = 0; kp < 8; ++kp) {
    const int32_t r = __shfl_sync(0xffffffffu, rowv, 2 * kp + hk);
    const uint8_t* src = cache + int64_t(r < 0 ? 0 : r) * kRowBytes;
    const int off = 64 * r0 + 16 * (u ^ (kp & 3));
    g.d[kp][0] = ws_ldg128(src + off);
    g.d[kp][1] = ws_ldg128(src + kL / 2 + off);
  }
  const uint8_t* own = cache + int64_t(rowv < 0 ? 0 : rowv) * kRowBytes + kScaleOff + 4 * (lane >> 4);
  g.sc0 = ws_ldg_f32_or0(own, rowv >= 0);
  g.sc1 = ws_ldg_f32_or0(own + 8, rowv >= 0);
}
// Dequantise the registers into the stage at kb (shared address). fast (warp-uniform): every scale
// of the tile passed ws_scale_fast; otherwise the exact e4m3 values are stored (scale 1) and ws_fixup
// applies the scales in fp32.
__device__ __forceinline__ void ws_store(const WsRegs& g, uint32_t kb, int pw, int lane, bool fast) {
  const int hk = lane & 1, r0 = (lane >> 3) & 3, u = (lane >> 1) & 3;
  // Slot 2u + hk of row 16 pw + hk in column block r0; + kp * 256 (2 rows) + hh * 4 blocks.
  const uint32_t base = ws_opaque(kb + r0 * kRegion + (pw * 16 + hk) * 128 + (2 * u + hk) * 16);
  const uint32_t base_hi = base + 16 - 32 * hk;  // slot 2u + 1 - hk
  // This lane's key (lane % 16), blocks lane / 16 and 2 + lane / 16, as bf16x2 multipliers.
  const uint32_t s2a = ws_scale2(fast ? g.sc0 : 1.0f), s2b = ws_scale2(fast ? g.sc1 : 1.0f);
#pragma unroll
  for (int kp = 0; kp < 8; ++kp) {
    const int src_lane = 2 * kp + hk + 16 * (r0 >> 1);
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      // An invalid key has scale 0 (its row-0 data times 0 = 0; in the slow case ws_fixup zeroes it).
      const uint32_t s2 = __shfl_sync(0xffffffffu, hh ? s2b : s2a, src_lane);
      uint4 lo, hi;
      ws_dequant16(g.d[kp][hh], s2, lo, hi);
      ws_sts128(base + kp * 256 + hh * 4 * kRegion, lo);
      ws_sts128(base_hi + kp * 256 + hh * 4 * kRegion, hi);
    }
  }
}
// Rare path (a scale that is not bf16-exact after * 2^120): scale this lane's 32 pieces in place
// (same addresses as ws_store; loops kept rolled, few registers).
__device__ __forceinline__ void ws_fixup(float sc0, float sc1, uint32_t kb, int pw, int lane) {
  const int hk = lane & 1, r0 = (lane >> 3) & 3, u = (lane >> 1) & 3;
  const uint32_t base = kb + r0 * kRegion + (pw * 16 + hk) * 128 + (2 * u + hk) * 16;
#pragma unroll 1
  for (int it = 0; it < 32; ++it) {  // it = (kp, hh, half)
    const int kp = it >> 2, hh = (it >> 1) & 1, half = it & 1;
    const int src_lane = 2 * kp + hk + 16 * (r0 >> 1);
    const float sc = __shfl_sync(0xffffffffu, hh ? sc1 : sc0, src_lane);
    const uint32_t a = base + kp * 256 + hh * 4 * kRegion + (half ? 16 - 32 * hk : 0);
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "r"(a)
                 : "memory");
    ws_sts128(a, ws_rescale8(v, sc));
  }
}
// Rope (bf16, copied as is) of the warp's 16 keys: lane fills slot P = lane & 7 of column block 8
// of rows 16 pw + (lane >> 3) + 4 q, i.e. rope chunk P ^ (row % 8); zeros for invalid keys.
__device__ __forceinline__ void ws_rope(const uint8_t* cache, uint32_t kb, int32_t rowv, int pw, int lane) {
  const int P = lane & 7;
  const uint32_t base = ws_opaque(kb + 8 * kRegion + (pw * 16 + (lane >> 3)) * 128 + P * 16);
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const int j = (lane >> 3) + 4 * q;
    const int32_t r = __shfl_sync(0xffffffffu, rowv, j);
    const uint8_t* src = r < 0 ? cache : cache + int64_t(r) * kRowBytes + kRopeOff + 16 * (P ^ (j & 7));
    ws_cp_async16(base + q * 512, src, r < 0 ? 0u : 16u);
  }
}

// grid (splits, ceil(H / 64), S); split sp covers tiles [sp * tps, min(tiles, (sp + 1) * tps)), >= 1.
__global__ void __launch_bounds__(kThreads, 1)
    mla_ws_kernel(const SparseMlaDecode p, int tps, int splits, float* __restrict__ part,
                  float2* __restrict__ ml) {
  extern __shared__ uint8_t ws_raw[];
  const uint32_t raw = ws_saddr(ws_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  uint8_t* const gb = ws_raw + (base - raw);  // generic pointer to the aligned base
  const uint32_t sQ = base + kOffQ, sK = base + kOffK, sP = base + kOffP;
  const uint32_t bar_full = base + kOffBar, bar_empty = base + kOffBar + 16;  // + 8 * stage
  const int tid = threadIdx.x, wg = tid >> 7, lane = tid & 31, w = (tid >> 5) & 3;
  const int64_t s = blockIdx.z, h0 = int64_t(blockIdx.y) * kHeads, sp = blockIdx.x;
  const int64_t tiles = cdiv(p.K, kKeys), t0 = sp * tps;
  const int n = int(imin(tiles, t0 + tps) - t0);

  if (tid == 0) {
    ws_mbar_init(bar_full, 128);
    ws_mbar_init(bar_full + 8, 128);
    ws_mbar_init(bar_empty, 256);
    ws_mbar_init(bar_empty + 8, 256);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (wg == 2) {
    // ------------------------------------------------------------------ producer
    ws_reg_dec<kRegProd>();
    const int pw = w;
    const uint8_t* cache = p.cache;
    WsRegs g;
    // Row ids two tiles ahead are loaded one iteration before they are needed, so that no load
    // latency is exposed in the loop: rowA (tile i, its FP8 loaded at the top of iteration i), rowB
    // (tile i + 1, L2-prefetched in iteration i), rowC (tile i + 2, loaded in iteration i).
    int32_t rowA = ws_row(p, t0, pw, lane);
    int32_t rowB = n > 1 ? ws_row(p, t0 + 1, pw, lane) : -1;
    for (int i = 0; i < n; ++i) {
      const int b = i & 1;
      // The loads of tile i are in flight while this warp waits for the stage.
      ws_issue(g, cache, rowA, lane);
      if (lane < 16 && rowB >= 0) ws_prefetch_l2(cache + int64_t(rowB) * kRowBytes, kRowBytes);
      const int32_t rowC = i + 2 < n ? ws_row(p, t0 + i + 2, pw, lane) : -1;
      ws_mbar_wait(bar_empty + 8 * b, ((i >> 1) & 1) ^ 1);
      const uint32_t kb = sK + b * kTile;
      ws_rope(cache, kb, rowA, pw, lane);
      const bool fast = __all_sync(0xffffffffu, ws_scale_fast(g.sc0) && ws_scale_fast(g.sc1));
      ws_store(g, kb, pw, lane, fast);
      if (!fast) ws_fixup(g.sc0, g.sc1, kb, pw, lane);
      const uint32_t vm = __ballot_sync(0xffffffffu, rowA >= 0) & 0xffffu;
      if (lane == 0) *reinterpret_cast<uint16_t*>(gb + kOffMask + 8 * b + 2 * pw) = uint16_t(vm);
      ws_cp_async_wait_all();
      ws_fence_async();
      ws_mbar_arrive(bar_full + 8 * b);
      rowA = rowB;
      rowB = rowC;
    }
  } else if (wg == 0) {
    // ------------------------------------------------------------------ WG0: scores, softmax, P V[:, :256]
    ws_reg_inc<kRegWg0>();
    ws_load_q(p, sQ, tid, s, h0);
    ws_cp_async_wait_all();
    ws_fence_async();
    ws_bar_sync(kBarQ, 128);  // WG0 only: WG1 never reads Q
    const int g4 = lane >> 2, t4 = lane & 3;
    const int ra = 16 * w + g4;  // rows ra and ra + 8 of this thread
    float o[128], sn[32], sr[32];
#pragma unroll
    for (int i = 0; i < 128; ++i) o[i] = 0.0f;
    ws_fence_regs(o);  // materialise the zeros before the first wgmma is in flight
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f, al0 = 1.0f, al1 = 1.0f;
    uint32_t pk[16];  // bf16 pairs of p: pk[2c] row ra keys 8c + 2 t4 (+1), pk[2c + 1] row ra + 8
    const float sc = p.scale;
    // S(tile in stage kb) = Q K^T: 32 k-steps of nope into sn, 4 of rope into sr; one group.
    auto issue_qk = [&](uint32_t kb) {
      const uint32_t qlo = ws_lo(sQ, 16), klo = ws_lo(kb, 16);
      ws_wg_fence();
#pragma unroll
      for (int kk = 0; kk < kL / 16; ++kk) {
        const uint32_t off = (kk >> 2) * kRegion + (kk & 3) * 32;
        if (kk == 0) ws_mma_qk0(sn, ws_desc_lo(qlo, off, 1024), ws_desc_lo(klo, off, 1024));
        else ws_mma_qk(sn, ws_desc_lo(qlo, off, 1024), ws_desc_lo(klo, off, 1024), 1u);
      }
#pragma unroll
      for (int kk = kL / 16; kk < kD / 16; ++kk) {
        const uint32_t off = (kk >> 2) * kRegion + (kk & 3) * 32;
        if (kk == kL / 16) ws_mma_qk0(sr, ws_desc_lo(qlo, off, 1024), ws_desc_lo(klo, off, 1024));
        else ws_mma_qk(sr, ws_desc_lo(qlo, off, 1024), ws_desc_lo(klo, off, 1024), 1u);
      }
      ws_wg_commit();
    };
    // O[:, 0:256] += P V (P from shared memory, V = dims 0..255 of stage kb); one group.
    auto issue_pv = [&](uint32_t kb) {
      const uint32_t plo = ws_lo(sP, 16), vlo = ws_lo(kb, 8192);
      ws_wg_fence();
#pragma unroll
      for (int kk = 0; kk < kKeys / 16; ++kk)
        ws_mma_pv_ss(o, ws_desc_lo(plo, kk * 32, 1024), ws_desc_lo(vlo, kk * 2048, 1024), 1u);
      ws_wg_commit();
    };
    // Scores of the retired QK of stage b -> masked, online softmax -> pk, al0 / al1, m, l.
    auto softmax = [&](int b) {
      // Valid-key bits of keys 8c + 2 t4 (+1) at bits 8c (+1).
      const uint64_t mask = *reinterpret_cast<const uint64_t*>(gb + kOffMask + 8 * b) >> (2 * t4);
      float tm0 = -INFINITY, tm1 = -INFINITY;
      // score = rbf(rbf(rbf(nope) + rbf(rope)) * scale), two keys per step with packed bf16 ops
      // (the fp32-to-bf16 conversions are the softmax's slowest instructions).
#pragma unroll
      for (int q = 0; q < 32; q += 2) {
        const uint32_t t = ws_add_bf16x2(ws_pack_bf16x2(sn[q], sn[q + 1]), ws_pack_bf16x2(sr[q], sr[q + 1]));
        const uint32_t u = ws_pack_bf16x2(__uint_as_float(t << 16) * sc, __uint_as_float(t & 0xffff0000u) * sc);
        const int bit = 8 * (q >> 2);  // keys 8c + 2 t4 and + 1 at bits 8c, 8c + 1 of mask
        sn[q] = (mask >> bit) & 1 ? __uint_as_float(u << 16) : -INFINITY;
        sn[q + 1] = (mask >> (bit + 1)) & 1 ? __uint_as_float(u & 0xffff0000u) : -INFINITY;
        if (q & 2) tm1 = fmaxf(tm1, fmaxf(sn[q], sn[q + 1]));
        else tm0 = fmaxf(tm0, fmaxf(sn[q], sn[q + 1]));
      }
#pragma unroll
      for (int x = 1; x < 4; x <<= 1) {
        tm0 = fmaxf(tm0, __shfl_xor_sync(0xffffffffu, tm0, x));
        tm1 = fmaxf(tm1, __shfl_xor_sync(0xffffffffu, tm1, x));
      }
      const float n0 = fmaxf(m0, tm0), n1 = fmaxf(m1, tm1);
      const float r0 = n0 == -INFINITY ? 0.0f : n0, r1 = n1 == -INFINITY ? 0.0f : n1;
      al0 = __expf(m0 - r0);
      al1 = __expf(m1 - r1);
      m0 = n0;
      m1 = n1;
      float ps0 = 0.0f, ps1 = 0.0f;
#pragma unroll
      for (int c = 0; c < 8; ++c) {
        const float x0 = __expf(sn[4 * c] - r0), x1 = __expf(sn[4 * c + 1] - r0);
        const float x2 = __expf(sn[4 * c + 2] - r1), x3 = __expf(sn[4 * c + 3] - r1);
        ps0 += x0 + x1;
        ps1 += x2 + x3;
        pk[2 * c] = ws_pack_bf16x2(x0, x1);
        pk[2 * c + 1] = ws_pack_bf16x2(x2, x3);
      }
      l0 = l0 * al0 + ps0;
      l1 = l1 * al1 + ps1;
    };
    // P and alpha to shared memory; the bar.sync also orders WG0's own P writes before its PV.
    auto publish = [&]() {
      // Row ra, chunk c (keys 8c..) at ra * 128 + ((c ^ g4) << 4) + 4 t4 (ra & 7 == g4); bits 4-6
      // of the base are g4, so the chunk is one XOR with an immediate.
      const uint32_t pa = ws_opaque(sP + ra * 128 + (g4 << 4) + 4 * t4);
#pragma unroll
      for (int c = 0; c < 8; ++c) {
        ws_sts32(pa ^ (c << 4), pk[2 * c]);
        ws_sts32((pa ^ (c << 4)) + 8 * 128, pk[2 * c + 1]);
      }
      if (t4 == 0) {
        reinterpret_cast<float*>(gb + kOffAlpha)[ra] = al0;
        reinterpret_cast<float*>(gb + kOffAlpha)[ra + 8] = al1;
      }
      ws_fence_async();
      ws_bar_sync(kBarPReady, 256);
    };
    auto rescale = [&]() {
      if (__any_sync(0xffffffffu, al0 != 1.0f || al1 != 1.0f)) {
#pragma unroll
        for (int c = 0; c < 32; ++c) {
          o[4 * c] *= al0;
          o[4 * c + 1] *= al0;
          o[4 * c + 2] *= al1;
          o[4 * c + 3] *= al1;
        }
      }
    };
    // Tile 0: scores only. Tile i >= 1: PV0(i - 1), then QK(i); the wait for PV0(i - 1) frees its
    // stage early (the producer refills it during QK(i)); nothing is in flight across iterations.
    ws_mbar_wait(bar_full, 0);
    issue_qk(sK);
    ws_wg_wait<0>();
    ws_fence_regs(sn);
    ws_fence_regs(sr);
    softmax(0);
    publish();
    rescale();
    for (int i = 1; i < n; ++i) {
      const int b = i & 1;
      issue_pv(sK + (b ^ 1) * kTile);  // PV0(i - 1)
      ws_mbar_wait(bar_full + 8 * b, (i >> 1) & 1);
      issue_qk(sK + b * kTile);        // QK(i)
      ws_wg_wait<1>();                 // PV0(i - 1) retired
      ws_fence_regs(o);
      ws_mbar_arrive(bar_empty + 8 * (b ^ 1));
      ws_wg_wait<0>();                 // QK(i) retired
      ws_fence_regs(sn);
      ws_fence_regs(sr);
      softmax(b);
      ws_bar_sync(kBarPFree, 256);     // WG1 is done with P(i - 1)
      publish();
      rescale();
    }
    issue_pv(sK + ((n - 1) & 1) * kTile);  // PV0(n - 1)
    ws_wg_wait<0>();
    ws_fence_regs(o);
#pragma unroll
    for (int x = 1; x < 4; x <<= 1) {
      l0 += __shfl_xor_sync(0xffffffffu, l0, x);
      l1 += __shfl_xor_sync(0xffffffffu, l1, x);
    }
    if (t4 == 0) {
      reinterpret_cast<float*>(gb + kOffL)[ra] = l0;
      reinterpret_cast<float*>(gb + kOffL)[ra + 8] = l1;
      reinterpret_cast<float*>(gb + kOffM)[ra] = m0;
      reinterpret_cast<float*>(gb + kOffM)[ra + 8] = m1;
    }
    ws_bar_sync(kBarEpi, 256);
    ws_epilogue(p, o, 0, ra, lane, splits, l0, l1, part);
    if (splits > 1 && t4 == 0) {
      const int64_t ha = int64_t(blockIdx.y) * kHeads + ra, hb = ha + 8;
      const int64_t rowa = (int64_t(blockIdx.x) * p.S + blockIdx.z) * p.H + ha;
      if (ha < p.H) ml[rowa] = make_float2(m0, l0);
      if (hb < p.H) ml[rowa + 8] = make_float2(m1, l1);
    }
  } else {
    // ------------------------------------------------------------------ WG1: P V[:, 256:]
    ws_reg_dec<kRegWg1>();
    const int g4 = lane >> 2;
    const int ra = 16 * w + g4;
    float o[128];
#pragma unroll
    for (int i = 0; i < 128; ++i) o[i] = 0.0f;
    ws_fence_regs(o);
    for (int i = 0; i < n; ++i) {
      const int b = i & 1;
      const uint32_t kb = sK + b * kTile;
      ws_bar_sync(kBarPReady, 256);
      ws_mbar_wait(bar_full + 8 * b, (i >> 1) & 1);  // already complete (WG0 waited); orders the reads
      const float al0 = reinterpret_cast<const float*>(gb + kOffAlpha)[ra];
      const float al1 = reinterpret_cast<const float*>(gb + kOffAlpha)[ra + 8];
      if (__any_sync(0xffffffffu, al0 != 1.0f || al1 != 1.0f)) {
#pragma unroll
        for (int c = 0; c < 32; ++c) {
          o[4 * c] *= al0;
          o[4 * c + 1] *= al0;
          o[4 * c + 2] *= al1;
          o[4 * c + 3] *= al1;
        }
      }
      const uint32_t plo = ws_lo(sP, 16), vlo = ws_lo(kb + 4 * kRegion, 8192);
      ws_wg_fence();
#pragma unroll
      for (int kk = 0; kk < kKeys / 16; ++kk)
        ws_mma_pv_ss(o, ws_desc_lo(plo, kk * 32, 1024), ws_desc_lo(vlo, kk * 2048, 1024), 1u);
      ws_wg_commit();
      ws_wg_wait<0>();
      ws_fence_regs(o);
      ws_mbar_arrive(bar_empty + 8 * b);
      if (i + 1 < n) ws_bar_arrive(kBarPFree, 256);
    }
    ws_bar_sync(kBarEpi, 256);
    const float l0 = reinterpret_cast<const float*>(gb + kOffL)[ra];
    const float l1 = reinterpret_cast<const float*>(gb + kOffL)[ra + 8];
    ws_epilogue(p, o, 1, ra, lane, splits, l0, l1, part);
  }
}

}  // namespace

bool mla_ws(const SparseMlaDecode& p, cudaStream_t stream) {
  if (p.layout.kv_lora != kL || p.layout.rope != kR || p.H % 16 != 0) return false;
  auto aligned = [](const void* x, uintptr_t a) { return reinterpret_cast<uintptr_t>(x) % a == 0; };
  if (!aligned(p.cache, 16) || !aligned(p.q_abs, 16) || !aligned(p.q_pe, 16) || !aligned(p.o_lat, 4) ||
      !aligned(p.idx, 4))
    return false;
  // SM count of an sm_90 device, 0 elsewhere (the binary carries sm_90a code only).
  static const int sms = [] {
    int dev = 0, major = 0, minor = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    return major == 9 && minor == 0 ? sm_count() : 0;
  }();
  if (sms == 0) return false;
  const int64_t tiles = cdiv(p.K, kKeys), hg = cdiv(p.H, kHeads), work = p.S * hg, rows = p.S * p.H;
  // Splits: mla_options().splits forces (tests, bench); otherwise the count with the least estimated
  // time in tile units: waves x (tiles per split + ~1.5 of prologue / epilogue), plus for splits > 1
  // a combine launch and the partials written + read (~9 MB per tile time, mostly L2).
  const int64_t forced = mla_options().splits, smax = std::min<int64_t>(tiles, 128);
  int64_t splits = 1;
  if (forced > 0) {
    splits = std::min(smax, forced);
  } else if (batch_invariant()) {
    splits = 1;
  } else {
    double best = 1e300;
    for (int64_t c = 1; c <= smax; ++c) {
      const int64_t tps = cdiv(tiles, c);
      if (cdiv(tiles, tps) != c) continue;  // same split as a smaller count
      const double waves = double(cdiv(work * c, sms));
      const double comb = c > 1 ? 1.0 + 2.0 * double(c * rows * kL * 4) / 9e6 : 0.0;
      const double cost = waves * (double(tps) + 1.5) + comb;
      if (cost < best) best = cost, splits = c;
    }
  }
  const int64_t tps = cdiv(tiles, splits);
  splits = cdiv(tiles, tps);  // every split has >= 1 tile
  static bool configured = false;
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(mla_ws_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
    configured = true;
  }
  float* part = nullptr;
  float2* ml = nullptr;
  if (splits > 1) {
    const size_t pb = size_t(splits * rows * kL) * 4, mb = size_t(splits * rows) * 8;
    uint8_t* ws = static_cast<uint8_t*>(workspace(pb + mb + 256, stream));
    part = reinterpret_cast<float*>(ws);
    ml = reinterpret_cast<float2*>(ws + (pb + 255) / 256 * 256);
  }
  const dim3 grid(unsigned(splits), unsigned(hg), unsigned(p.S));
  mla_ws_kernel<<<grid, kThreads, kSmemBytes, stream>>>(p, int(tps), int(splits), part, ml);
  CUDA_CHECK_LAUNCH();
  if (splits > 1) mla_combine(part, ml, p.o_lat, rows, kL, int(splits), stream);
  return true;
}

}  // namespace dsa::ops::cuda::detail
