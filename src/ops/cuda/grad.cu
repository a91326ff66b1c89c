// The trainer's ops on the GPU (ops/grad.h), straightforward kernels with fixed reduction
// orders (deterministic): quantisers, norm / RoPE / Hadamard / SwiGLU backward, the absorbed
// attention backward (per query-head block, then per key block), MoE backward pieces, scatter-add,
// the log-softmax gradient, AdamW and reductions. The GEMM is in grad_gemm.cu (cuBLAS).
#include <cfloat>

#include "base/portable_math.h"
#include "ops/cuda/common.cuh"

namespace dsa::ops::cuda {
namespace {
using namespace detail;

constexpr int kT = 256;

__device__ float block_reduce_sum(float v, float* red) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float r = 0.0f;
  for (int i = 0; i < nw; ++i) r += red[i];
  __syncthreads();
  return r;
}

__device__ float block_reduce_max(float v, float* red) {
  v = warp_max(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float r = -INFINITY;
  for (int i = 0; i < nw; ++i) r = fmaxf(r, red[i]);
  __syncthreads();
  return r;
}

__global__ void dequant_kernel(Dequant p) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.R * p.C) return;
  const int64_t r = i / p.C, c = i % p.C, cb = cdiv(p.C, kBlock);
  const float v = fp82f(p.q[i]) * p.s[(r / p.block_rows) * cb + c / kBlock];
  if (p.to_bf16) static_cast<uint16_t*>(p.out)[i] = f2bf(v);
  else static_cast<float*>(p.out)[i] = v;
}

// One block per 128x128 tile.
__global__ void weight_quant_kernel(WeightQuant p) {
  __shared__ float red[32];
  const int64_t cb = cdiv(p.C, kBlock), br = blockIdx.x / cb, bc = blockIdx.x % cb;
  const int64_t r0 = br * kBlock, c0 = bc * kBlock, nr = imin(kBlock, p.R - r0), nc = imin(kBlock, p.C - c0);
  float amax = 0.0f;
  for (int64_t i = threadIdx.x; i < nr * nc; i += blockDim.x)
    amax = fmaxf(amax, fabsf(p.x[(r0 + i / nc) * p.C + c0 + i % nc]));
  amax = block_reduce_max(amax, red);
  const float s = fmaxf(amax, 1e-12f) / 448.0f;
  if (threadIdx.x == 0) p.s[blockIdx.x] = s;
  for (int64_t i = threadIdx.x; i < nr * nc; i += blockDim.x) {
    const int64_t o = (r0 + i / nc) * p.C + c0 + i % nc;
    p.q[o] = f2fp8(p.x[o] / s);
  }
}

// Norm backward: one block per row (inverse rms / x̂ kept for the weight gradient), then the
// weight gradient per 32-row chunk (one thread per (chunk, d), rows in order), then the chunks
// in order: deterministic, no atomics.
__device__ __forceinline__ float rms_r(const RmsNormBwd& p, int64_t o) {
  return p.res_in ? bf2f(p.x[o].bits) + bf2f(p.res_in[o].bits) : bf2f(p.x[o].bits);
}

__global__ void rms_norm_bwd_kernel(RmsNormBwd p, float* inv_out) {
  __shared__ float red[32];
  const int64_t m = blockIdx.x, o = m * p.D;
  float ss = 0.0f, dot = 0.0f;
  for (int64_t d = threadIdx.x; d < p.D; d += blockDim.x) {
    const float r = rms_r(p, o + d);
    ss += r * r;
    dot += p.w[d] * p.dy[o + d] * r;
  }
  ss = block_reduce_sum(ss, red);
  dot = block_reduce_sum(dot, red);
  const float inv = rsqrtf(ss / float(p.D) + p.eps), c = dot * inv * inv * inv / float(p.D);
  if (threadIdx.x == 0) inv_out[m] = inv;
  __syncthreads();
  for (int64_t d = threadIdx.x; d < p.D; d += blockDim.x) {
    const float g = p.w[d] * p.dy[o + d] * inv - rms_r(p, o + d) * c + (p.dres ? p.dres[o + d] : 0.0f);
    p.dx[o + d] = g;
  }
}

__global__ void rms_norm_dw_kernel(RmsNormBwd p, const float* dy, const float* inv, float* part) {
  const int64_t nc = cdiv(p.M, 32);
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= nc * p.D) return;
  const int64_t c = i / p.D, d = i % p.D;
  float acc = 0.0f;
  for (int64_t m = c * 32; m < imin(p.M, (c + 1) * 32); ++m) acc += dy[m * p.D + d] * rms_r(p, m * p.D + d) * inv[m];
  part[i] = acc;
}

__global__ void sum_chunks_kernel(const float* part, int64_t nc, int64_t D, float* dst) {
  const int64_t d = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (d >= D) return;
  float acc = dst[d];
  for (int64_t c = 0; c < nc; ++c) acc += part[c * D + d];
  dst[d] = acc;
}

__global__ void layer_norm_stats_kernel(LayerNormBwd p, float* xhat, float* inv_out, float* mg_out) {
  __shared__ float red[32];
  const int64_t m = blockIdx.x, o = m * p.D;
  float sum = 0.0f;
  for (int64_t d = threadIdx.x; d < p.D; d += blockDim.x) sum += bf2f(p.x[o + d].bits);
  const float mean = block_reduce_sum(sum, red) / float(p.D);
  float var = 0.0f;
  for (int64_t d = threadIdx.x; d < p.D; d += blockDim.x) {
    const float t = bf2f(p.x[o + d].bits) - mean;
    var += t * t;
  }
  const float inv = rsqrtf(block_reduce_sum(var, red) / float(p.D) + p.eps);
  float mg = 0.0f, mgx = 0.0f;
  for (int64_t d = threadIdx.x; d < p.D; d += blockDim.x) {
    const float xh = (bf2f(p.x[o + d].bits) - mean) * inv, g = p.dy[o + d] * p.w[d];
    xhat[o + d] = xh;
    mg += g;
    mgx += g * xh;
  }
  mg = block_reduce_sum(mg, red) / float(p.D);
  mgx = block_reduce_sum(mgx, red) / float(p.D);
  if (threadIdx.x == 0) inv_out[m] = inv, mg_out[2 * m] = mg, mg_out[2 * m + 1] = mgx;
}

// dw / db per 32-row chunk from x̂ and dy.
__global__ void layer_norm_dwb_kernel(const float* xhat, const float* dy, int64_t M, int64_t D, float* part) {
  const int64_t nc = cdiv(M, 32);
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= nc * D) return;
  const int64_t c = i / D, d = i % D;
  float w = 0.0f, b = 0.0f;
  for (int64_t m = c * 32; m < imin(M, (c + 1) * 32); ++m) {
    w += dy[m * D + d] * xhat[m * D + d];
    b += dy[m * D + d];
  }
  part[(c * 2) * D + d] = w;
  part[(c * 2 + 1) * D + d] = b;
}

__global__ void sum_chunks2_kernel(const float* part, int64_t nc, int64_t D, float* dw, float* db) {
  const int64_t d = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (d >= D) return;
  float aw = dw ? dw[d] : 0.0f, ab = db ? db[d] : 0.0f;
  for (int64_t c = 0; c < nc; ++c) aw += part[(c * 2) * D + d], ab += part[(c * 2 + 1) * D + d];
  if (dw) dw[d] = aw;
  if (db) db[d] = ab;
}

__global__ void layer_norm_dx_kernel(LayerNormBwd p, const float* xhat, const float* inv, const float* mg) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.M * p.D) return;
  const int64_t m = i / p.D, d = i % p.D;
  p.dx[i] = inv[m] * (p.dy[i] * p.w[d] - mg[2 * m] - xhat[i] * mg[2 * m + 1]);
}

__global__ void rope_bwd_kernel(RopeBwd p) {
  const int64_t half = p.rope_dim / 2;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.M * p.H * half) return;
  const int64_t m = i / (p.H * half), h = (i / half) % p.H, j = i % half;
  float* x = p.dx + (m * p.H + h) * p.row_stride + p.off;
  float* a = p.interleaved ? x + 2 * j : x + j;
  float* b = p.interleaved ? x + 2 * j + 1 : x + j + half;
  const float c = p.cos[int64_t(p.pos[m]) * half + j], s = p.sin[int64_t(p.pos[m]) * half + j];
  const float g0 = *a, g1 = *b;
  *a = g0 * c + g1 * s;
  *b = -g0 * s + g1 * c;
}

__global__ void hadamard_f32_kernel(HadamardF32 p) {
  extern __shared__ float v[];
  float* x = p.x + int64_t(blockIdx.x) * p.n;
  for (int64_t i = threadIdx.x; i < p.n; i += blockDim.x) v[i] = x[i];
  __syncthreads();
  for (int64_t len = 1; len < p.n; len <<= 1) {
    for (int64_t t = threadIdx.x; t < p.n / 2; t += blockDim.x) {
      const int64_t i = (t / len) * 2 * len + t % len;
      const float a = v[i], b = v[i + len];
      v[i] = a + b;
      v[i + len] = a - b;
    }
    __syncthreads();
  }
  const float sc = rsqrtf(float(p.n));
  for (int64_t i = threadIdx.x; i < p.n; i += blockDim.x) x[i] = v[i] * sc;
}

__device__ __forceinline__ void latent_at(const uint8_t* row, const LatentLayout& lay, int64_t i, float* out) {
  if (i < lay.kv_lora) {
    float sc;
    memcpy(&sc, row + lat_scale_off(lay) + 4 * (i / kBlock), 4);
    *out = fp82f(row[i]) * sc;
  } else {
    uint16_t b;
    memcpy(&b, row + lat_rope_off(lay) + 2 * (i - lay.kv_lora), 2);
    *out = bf2f(b);
  }
}

// Phase 1: one block per (s, h). Warps score their keys (the forward's rounding points), the
// block softmaxes them, then dp_j and G; finally d_q over the L + R dims.
__global__ void sparse_mla_bwd_q_kernel(SparseMlaBwdQ p) {
  __shared__ float red[32];
  const int64_t L = p.layout.kv_lora, R = p.layout.rope, rb = lat_row_bytes(p.layout);
  const int64_t sh = blockIdx.x, s = sh / p.H;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  float* P = p.P + sh * p.K;
  float* G = p.G + sh * p.K;
  const uint16_t* qa = reinterpret_cast<const uint16_t*>(p.q_abs) + sh * L;
  const uint16_t* qp = reinterpret_cast<const uint16_t*>(p.q_pe) + sh * R;
  const float* dov = p.d_o + sh * L;
  for (int64_t j = warp; j < p.K; j += nw) {
    const int32_t t = p.idx[s * p.K + j];
    float d1 = 0.0f, d2 = 0.0f, dp = 0.0f;
    if (t >= 0 && t < p.N) {
      const uint8_t* row = p.cache + int64_t(t) * rb;
      for (int64_t i = lane; i < L; i += 32) {
        float c;
        latent_at(row, p.layout, i, &c);
        d1 += bf2f(qa[i]) * c;
        dp += dov[i] * c;
      }
      for (int64_t i = lane; i < R; i += 32) {
        float e;
        latent_at(row, p.layout, L + i, &e);
        d2 += bf2f(qp[i]) * e;
      }
    }
    d1 = warp_sum(d1), d2 = warp_sum(d2), dp = warp_sum(dp);
    if (lane == 0) {
      P[j] = (t >= 0 && t < p.N) ? rbf(rbf(rbf(d1) + rbf(d2)) * p.scale) : -INFINITY;
      G[j] = dp;
    }
  }
  __syncthreads();
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < p.K; j += blockDim.x) mx = fmaxf(mx, P[j]);
  mx = block_reduce_max(mx, red);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < p.K; j += blockDim.x) sum += P[j] == -INFINITY ? 0.0f : expf(P[j] - mx);
  sum = block_reduce_sum(sum, red);
  float D = 0.0f;
  for (int64_t j = threadIdx.x; j < p.K; j += blockDim.x) {
    const float pr = P[j] == -INFINITY ? 0.0f : rbf(expf(P[j] - mx) / sum);
    P[j] = pr;
    D += pr * G[j];
  }
  D = block_reduce_sum(D, red);
  for (int64_t j = threadIdx.x; j < p.K; j += blockDim.x) G[j] = p.scale * P[j] * (G[j] - D);
  __syncthreads();
  for (int64_t i = threadIdx.x; i < L + R; i += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < p.K; ++j) {
      const int32_t t = p.idx[s * p.K + j];
      if (t < 0 || t >= p.N) continue;
      float c;
      latent_at(p.cache + int64_t(t) * rb, p.layout, i, &c);
      acc += G[j] * c;
    }
    if (i < L) p.d_q_abs[sh * L + i] = acc;
    else p.d_q_pe[sh * R + (i - L)] = acc;
  }
}

// Phase 2: one block per key, threads over the L + R dims, slots and heads in order.
__global__ void sparse_mla_bwd_kv_kernel(SparseMlaBwdKv p) {
  const int64_t r = blockIdx.x, W = p.L + p.R;
  const uint16_t* qa = reinterpret_cast<const uint16_t*>(p.q_abs);
  const uint16_t* qp = reinterpret_cast<const uint16_t*>(p.q_pe);
  for (int64_t i = threadIdx.x; i < W; i += blockDim.x) {
    float acc = 0.0f;
    for (int32_t e = p.key_ptr[r]; e < p.key_ptr[r + 1]; ++e) {
      const int64_t s = p.key_list[e] / p.K, j = p.key_list[e] % p.K;
      for (int64_t h = 0; h < p.H; ++h) {
        const int64_t sh = s * p.H + h;
        const float pr = p.P[sh * p.K + j], g = p.G[sh * p.K + j];
        if (i < p.L) acc += pr * p.d_o[sh * p.L + i] + g * bf2f(qa[sh * p.L + i]);
        else acc += g * bf2f(qp[sh * p.R + (i - p.L)]);
      }
    }
    p.d_kv[r * W + i] = acc;
  }
}

__global__ void silu_mul_bwd_kernel(SiluMulBwd p) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.M * p.N) return;
  const float g = bf2f(p.g[i].bits), u = bf2f(p.u[i].bits), dh = p.dh[i];
  const float sg = 1.0f / (1.0f + expf(-g));
  p.dg[i] = dh * u * sg * (1.0f + g * (1.0f - sg));
  p.du[i] = dh * g * sg;
}

__global__ void moe_gate_bwd_kernel(MoeGateBwd p) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= p.T) return;
  const float* lg = p.logits + t * p.E;
  const int32_t* ex = p.experts + t * p.k;
  const float* dw = p.d_weights + t * p.k;
  float sum = 0.0f, dot = 0.0f;
  for (int64_t j = 0; j < p.k; ++j) {
    const float sc = 1.0f / (1.0f + expf(-lg[ex[j]]));
    sum += sc;
    dot += dw[j] * sc;
  }
  for (int64_t e = 0; e < p.E; ++e) {
    const float sc = 1.0f / (1.0f + expf(-lg[e]));
    float ds = p.d_scores ? p.d_scores[t * p.E + e] : 0.0f;
    for (int64_t j = 0; j < p.k; ++j)
      if (ex[j] == e) ds += p.route_scale * (p.norm_topk_prob ? dw[j] / sum - dot / (sum * sum) : dw[j]);
    p.d_logits[t * p.E + e] = ds * sc * (1.0f - sc);
  }
}

// One block per (s, j) choice.
__global__ void moe_combine_bwd_kernel(MoeCombineBwd p) {
  __shared__ float red[32];
  const int64_t s = blockIdx.x / p.k;
  const int32_t r = p.pos[blockIdx.x];
  if (r < 0 || r >= p.R) return;
  float dot = 0.0f;
  for (int64_t h = threadIdx.x; h < p.H; h += blockDim.x) {
    const float da = p.d_acc[s * p.H + h];
    p.d_y[int64_t(r) * p.H + h] = da * p.w[r];
    dot += da * bf2f(p.y[int64_t(r) * p.H + h].bits);
  }
  dot = block_reduce_sum(dot, red);
  if (threadIdx.x == 0) p.d_w[r] = dot;
}

__global__ void scatter_add_rows_kernel(ScatterAddRows p) {
  const int64_t g = blockIdx.x;
  float* d = p.dst + int64_t(p.dst_rows[g]) * p.H;
  for (int64_t h = threadIdx.x; h < p.H; h += blockDim.x) {
    float acc = d[h];
    for (int32_t i = p.ptr[g]; i < p.ptr[g + 1]; ++i) acc += p.src[int64_t(p.src_rows[i]) * p.H + h];
    d[h] = acc;
  }
}

// One block per row: an id outside the row's (ascending) set, found by binary search, gets -inf.
__global__ void mask_logits_kernel(MaskLogits p) {
  const int64_t m = blockIdx.x, b = p.off[m], e = p.off[m + 1];
  if (b >= e) return;
  float* z = p.z + m * p.V;
  for (int64_t v = threadIdx.x; v < p.V; v += blockDim.x) {
    int64_t lo = b, hi = e;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (p.ids[mid] < v) lo = mid + 1;
      else hi = mid;
    }
    if (lo == e || p.ids[lo] != v) z[v] = -INFINITY;
  }
}

// One block of kLseLanes threads per row: max, then base/portable_math.h's log-sum-exp in its
// exact order (thread j sums i = j mod kLseLanes serially, thread 0 the partials in order), so
// the log-prob equals the host's log_sum_exp bit for bit; then the gradient.
__global__ void logits_grad_kernel(LogitsGrad p) {
  __shared__ float red[32];
  __shared__ double part[pm::kLseLanes];
  __shared__ double lse_s;
  const int64_t m = blockIdx.x;
  const float* z = p.z + m * p.V;
  float mx = -INFINITY;
  for (int64_t v = threadIdx.x; v < p.V; v += blockDim.x) mx = fmaxf(mx, z[v]);
  mx = block_reduce_max(mx, red);
  double sum = 0.0;
  for (int64_t v = threadIdx.x; v < p.V; v += pm::kLseLanes) sum += pm::exp(double(z[v]) - double(mx));
  part[threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0.0;
    for (int j = 0; j < pm::kLseLanes; ++j) t += part[j];
    lse_s = mx == -INFINITY ? -INFINITY : double(mx) + pm::log(t);
  }
  __syncthreads();
  const double lse = lse_s;
  const int32_t t = p.target[m];
  if (threadIdx.x == 0 && p.logp) p.logp[m] = double(z[t]) - lse;
  __syncthreads();
  if (!p.dz) return;
  const double g = p.g[m];
  float* dz = p.dz + m * p.V;
  for (int64_t v = threadIdx.x; v < p.V; v += blockDim.x)
    dz[v] = float(g * ((v == t ? 1.0 : 0.0) - exp(double(z[v]) - lse)));
}

__global__ void adamw_kernel(AdamW p) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.n) return;
  const float g = p.g[i] * p.grad_scale;
  const float m = p.beta1 * p.m[i] + (1.0f - p.beta1) * g, v = p.beta2 * p.v[i] + (1.0f - p.beta2) * (g * g);
  p.m[i] = m;
  p.v[i] = v;
  p.p[i] = p.p[i] - p.lr * ((m / p.bc1) / (sqrtf(v / p.bc2) + p.eps) + p.wd * p.p[i]);
}

// The reference's order: 4096-element blocks summed serially in double, then the block sums.
__global__ void sum_squares_blocks_kernel(const float* x, int64_t n, double* part) {
  const int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b * 4096 >= n) return;
  double s = 0.0;
  for (int64_t i = b * 4096; i < imin(n, (b + 1) * 4096); ++i) s += double(x[i]) * double(x[i]);
  part[b] = s;
}

__global__ void sum_serial_kernel(const double* part, int64_t nb, double* out) {
  double t = 0.0;
  for (int64_t b = 0; b < nb; ++b) t += part[b];
  *out = t;
}

__global__ void axpy_kernel(Axpy p) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < p.n) p.y[i] = p.y[i] + p.alpha * p.x[i];
}

}  // namespace

void dequant(const Dequant& p, cudaStream_t s) {
  if (p.R * p.C == 0) return;
  dequant_kernel<<<grid_1d(p.R * p.C, kT), kT, 0, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

void weight_quant(const WeightQuant& p, cudaStream_t s) {
  const int64_t nb = cdiv(p.R, kBlock) * cdiv(p.C, kBlock);
  if (nb == 0) return;
  weight_quant_kernel<<<int(nb), kT, 0, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

void rms_norm_bwd(const RmsNormBwd& p, cudaStream_t s) {
  if (p.M == 0) return;
  const int64_t nc = cdiv(p.M, 32);
  // Scratch: inverse rms [M], chunk partials [nc, D], and a copy of dy when dx overwrites it.
  const bool alias = p.dx == p.dy;
  float* inv = static_cast<float*>(workspace(size_t(p.M + nc * p.D + (alias ? p.M * p.D : 0)) * 4, s));
  float* part = inv + p.M;
  const float* dy = p.dy;
  if (alias && p.dw) {
    float* copy = part + nc * p.D;
    CUDA_CHECK(cudaMemcpyAsync(copy, p.dy, size_t(p.M * p.D) * 4, cudaMemcpyDeviceToDevice, s));
    dy = copy;
  }
  rms_norm_bwd_kernel<<<int(p.M), 128, 0, s>>>(p, inv);
  CUDA_CHECK_LAUNCH();
  if (!p.dw) return;
  rms_norm_dw_kernel<<<grid_1d(nc * p.D, kT), kT, 0, s>>>(p, dy, inv, part);
  sum_chunks_kernel<<<grid_1d(p.D, kT), kT, 0, s>>>(part, nc, p.D, p.dw);
  CUDA_CHECK_LAUNCH();
}

void layer_norm_bwd(const LayerNormBwd& p, cudaStream_t s) {
  if (p.M == 0) return;
  const int64_t nc = cdiv(p.M, 32);
  float* xhat = static_cast<float*>(workspace(size_t(p.M * p.D + 2 * nc * p.D + 3 * p.M) * 4, s));
  float* part = xhat + p.M * p.D;
  float* inv = part + 2 * nc * p.D;
  float* mg = inv + p.M;
  layer_norm_stats_kernel<<<int(p.M), 128, 0, s>>>(p, xhat, inv, mg);
  if (p.dw || p.db) {
    layer_norm_dwb_kernel<<<grid_1d(nc * p.D, kT), kT, 0, s>>>(xhat, p.dy, p.M, p.D, part);
    sum_chunks2_kernel<<<grid_1d(p.D, kT), kT, 0, s>>>(part, nc, p.D, p.dw, p.db);
  }
  layer_norm_dx_kernel<<<grid_1d(p.M * p.D, kT), kT, 0, s>>>(p, xhat, inv, mg);  // last: dx may alias dy
  CUDA_CHECK_LAUNCH();
}

void rope_bwd(const RopeBwd& p, cudaStream_t s) {
  const int64_t n = p.M * p.H * (p.rope_dim / 2);
  if (n == 0) return;
  rope_bwd_kernel<<<grid_1d(n, kT), kT, 0, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

void hadamard_f32(const HadamardF32& p, cudaStream_t s) {
  DSA_CUDA_REQUIRE(p.n > 0 && (p.n & (p.n - 1)) == 0 && p.n <= 8192, "hadamard_f32: n must be a power of two <= 8192");
  if (p.M == 0) return;
  hadamard_f32_kernel<<<int(p.M), 128, size_t(p.n) * 4, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

void sparse_mla_bwd_q(const SparseMlaBwdQ& p, cudaStream_t s) {
  if (p.S * p.H == 0) return;
  sparse_mla_bwd_q_kernel<<<int(p.S * p.H), kT, 0, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

void sparse_mla_bwd_kv(const SparseMlaBwdKv& p, cudaStream_t s) {
  if (p.n_keys == 0) return;
  sparse_mla_bwd_kv_kernel<<<int(p.n_keys), kT, 0, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

void silu_mul_bwd(const SiluMulBwd& p, cudaStream_t s) {
  if (p.M * p.N == 0) return;
  silu_mul_bwd_kernel<<<grid_1d(p.M * p.N, kT), kT, 0, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

void moe_gate_bwd(const MoeGateBwd& p, cudaStream_t s) {
  if (p.T == 0) return;
  moe_gate_bwd_kernel<<<grid_1d(p.T, 64), 64, 0, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

void moe_combine_bwd(const MoeCombineBwd& p, cudaStream_t s) {
  CUDA_CHECK(cudaMemsetAsync(p.d_y, 0, size_t(p.R * p.H) * 4, s));
  CUDA_CHECK(cudaMemsetAsync(p.d_w, 0, size_t(p.R) * 4, s));
  if (p.S * p.k == 0) return;
  moe_combine_bwd_kernel<<<int(p.S * p.k), 128, 0, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

void scatter_add_rows(const ScatterAddRows& p, cudaStream_t s) {
  if (p.G == 0) return;
  scatter_add_rows_kernel<<<int(p.G), 128, 0, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

void logits_grad(const LogitsGrad& p, cudaStream_t s) {
  if (p.M == 0) return;
  logits_grad_kernel<<<int(p.M), pm::kLseLanes, 0, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

void mask_logits(const MaskLogits& p, cudaStream_t s) {
  if (p.M == 0) return;
  mask_logits_kernel<<<int(p.M), 256, 0, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

void adamw(const AdamW& p, cudaStream_t s) {
  if (p.n == 0) return;
  adamw_kernel<<<grid_1d(p.n, kT), kT, 0, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

void sum_squares(const SumSquares& p, cudaStream_t s) {
  const int64_t nb = cdiv(p.n, 4096);
  if (nb == 0) {
    CUDA_CHECK(cudaMemsetAsync(p.out, 0, 8, s));
    return;
  }
  double* part = static_cast<double*>(workspace(size_t(nb) * 8, s));
  sum_squares_blocks_kernel<<<grid_1d(nb, 128), 128, 0, s>>>(p.x, p.n, part);
  sum_serial_kernel<<<1, 1, 0, s>>>(part, nb, p.out);
  CUDA_CHECK_LAUNCH();
}

void axpy(const Axpy& p, cudaStream_t s) {
  if (p.n == 0) return;
  axpy_kernel<<<grid_1d(p.n, kT), kT, 0, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dsa::ops::cuda
