// MoE gate (spec §8.2), one thread per token: sigmoid, group-limited top-k on biased scores,
// weights from unbiased scores; ties go to the lower index as in the reference's stable sorts.
#include <cmath>

#include "ops/cuda/common.cuh"

namespace dsa::ops::cuda {
namespace {

constexpr int kMaxE = 256, kMaxG = 64;

__global__ void moe_gate_kernel(MoeGate p) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= p.T) return;
  float s[kMaxE], b[kMaxE], gs[kMaxG];
  const int E = int(p.E), G = int(p.n_group), gsz = E / G;
  const float* lg = p.logits + t * p.E;
  for (int e = 0; e < E; ++e) {
    s[e] = 1.0f / (1.0f + expf(-lg[e]));
    b[e] = p.bias ? s[e] + p.bias[e] : s[e];
    if (p.biased) p.biased[t * p.E + e] = b[e];
  }
  if (G > 1) {
    for (int g = 0; g < G; ++g) {
      float m1 = -INFINITY, m2 = -INFINITY;
      for (int e = g * gsz; e < (g + 1) * gsz; ++e) {
        if (b[e] > m1) {
          m2 = m1;
          m1 = b[e];
        } else if (b[e] > m2) {
          m2 = b[e];
        }
      }
      gs[g] = (p.bias && gsz >= 2) ? m1 + m2 : m1;
    }
    bool keep[kMaxG];
    for (int g = 0; g < G; ++g) keep[g] = false;
    for (int r = 0; r < p.topk_group; ++r) {
      int best = -1;
      for (int g = 0; g < G; ++g)
        if (!keep[g] && (best < 0 || gs[g] > gs[best])) best = g;
      keep[best] = true;
    }
    for (int g = 0; g < G; ++g)
      if (!keep[g])
        for (int e = g * gsz; e < (g + 1) * gsz; ++e) b[e] = -INFINITY;
  }
  // Selection of topk by b (stable: lower index first among equals), marked in a bitmask.
  uint32_t chosen[kMaxE / 32] = {};
  for (int r = 0; r < p.topk; ++r) {
    int best = -1;
    for (int e = 0; e < E; ++e)
      if (!(chosen[e >> 5] >> (e & 31) & 1u) && (best < 0 || b[e] > b[best])) best = e;
    chosen[best >> 5] |= 1u << (best & 31);
  }
  float sum = 0.0f;
  for (int e = 0; e < E; ++e)
    if (chosen[e >> 5] >> (e & 31) & 1u) sum += s[e];
  int j = 0;
  for (int e = 0; e < E; ++e) {
    if (!(chosen[e >> 5] >> (e & 31) & 1u)) continue;
    float w = s[e];
    if (p.norm_topk_prob) w = w / sum;
    p.experts[t * p.topk + j] = e;
    p.weights[t * p.topk + j] = w * p.route_scale;
    ++j;
  }
}

}  // namespace

void moe_gate(const MoeGate& p, cudaStream_t stream) {
  DSA_CUDA_REQUIRE(p.T > 0 && p.E > 0 && p.n_group > 0 && p.topk_group > 0 && p.topk > 0,
                   "moe_gate: bad dims");
  DSA_CUDA_REQUIRE(p.E % p.n_group == 0 && p.topk_group <= p.n_group &&
                       p.topk <= p.topk_group * (p.E / p.n_group),
                   "moe_gate: inconsistent E / n_group / topk_group / topk");
  DSA_CUDA_REQUIRE(p.E <= kMaxE && p.n_group <= kMaxG, "moe_gate: E <= 256 and n_group <= 64 only");
  DSA_CUDA_REQUIRE(p.logits && p.experts && p.weights, "moe_gate: null pointer");
  moe_gate_kernel<<<unsigned(ceil_div(p.T, 64)), 64, 0, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dsa::ops::cuda
