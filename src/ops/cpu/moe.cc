// CPU MoE ops: gate and combine are the reference's on token slices split over the pool; the
// grouped expert GEMM runs the fast fp8_gemm once per expert, as the per-expert loop did.
#include "base/error.h"
#include "base/thread_pool.h"
#include "ops/cpu/cpu_ops.h"
#include "ops/ref/ref_util.h"  // gate, grouped GEMM by group, combine rows

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")  // same rounding as ops/ref (exact equality)
#endif

namespace dsa::ops::cpu {

void moe_gate(const MoeGate& p) {
  // Tokens are independent: each chunk is the reference on its rows (a few hundred experts per
  // token; the reference's sorts cost nothing next to the gate GEMM). Checked here, not in the
  // pool's threads.
  ref::check(p);
  parallel_for(p.T, [&](int64_t t0, int64_t t1) {
    MoeGate q = p;
    q.logits = p.logits + t0 * p.E;
    q.experts = p.experts + t0 * p.topk;
    q.weights = p.weights + t0 * p.topk;
    q.biased = p.biased ? p.biased + t0 * p.E : nullptr;
    q.T = t1 - t0;
    ref::moe_gate(q);
  });
}

void grouped_fp8_gemm(const GroupedFp8Gemm& p) {
  // Same M per call as the old per-expert loop, so the same fp8_gemm path (GEMV below 16 rows)
  // and bit-identical outputs.
  ref::grouped_fp8_gemm_by_group(p, &fp8_gemm);
}

void moe_combine(const MoeCombine& p) {
  DSA_CHECK(p.S >= 0 && p.k > 0 && p.H > 0, "moe_combine: bad dims S={} k={} H={}", p.S, p.k, p.H);
  DSA_CHECK(p.acc && p.y && p.pos && p.w, "moe_combine: null pointer");
  // Tokens are independent: each chunk is the reference on its rows (same rounding).
  parallel_for(p.S, [&](int64_t s0, int64_t s1) {
    ref::moe_combine({p.acc + s0 * p.H, p.y, p.pos + s0 * p.k, p.w, s1 - s0, p.k, p.H});
  });
}

}  // namespace dsa::ops::cpu
