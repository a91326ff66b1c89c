// Timing proxy OpTable for `dsa bench`: forwards every op to the wrapped backend, accumulates
// wall time per op and the op's minimum bytes moved / useful FLOPs computed from its parameters.
#include <chrono>

#include "app/bench.h"

namespace dsa::app::bench {

namespace {

const ops::OpTable* g_inner = nullptr;
int64_t g_hidden = 0;
OpStats g_stats;
std::vector<double> g_marks;
const auto g_origin = std::chrono::steady_clock::now();

struct Cost {
  double bytes = 0, flops = 0;
};

void account(int op, double seconds, Cost c) {
  OpStat& s = g_stats[size_t(op)];
  s.seconds += seconds;
  s.calls += 1;
  s.bytes += c.bytes;
  s.flops += c.flops;
}

// Selected entries of an index array. On a device backend the array is not read back (that
// would add a transfer to the timed layer): every entry counts, exact once context >= top-k.
int64_t valid_count(const int32_t* idx, int64_t n) {
  if (g_inner->mem.device) return n;
  int64_t v = 0;
  for (int64_t i = 0; i < n; ++i) v += idx[i] >= 0;
  return v;
}

// Bytes: inputs read once + outputs written once (weights dominate GEMV; keys dominate scans).
Cost cost(const ops::ActQuant& p) { return {double(p.M * p.K) * 3 + 4.0 * p.M * ops::ceil_div(p.K, 128), 0}; }
Cost cost(const ops::Fp8Gemm& p) {
  const double w = double(p.N) * p.K + 4.0 * ops::ceil_div(p.N, 128) * ops::ceil_div(p.K, 128);
  return {w + double(p.M) * p.K + 2.0 * p.M * p.N, 2.0 * p.M * p.N * p.K};
}
Cost cost(const ops::LinearF32& p) {
  return {2.0 * p.N * p.K + 4.0 * p.M * p.K + 4.0 * p.M * p.N, 2.0 * p.M * p.N * p.K};
}
Cost cost(const ops::RmsNorm& p) { return {double(p.M * p.D) * (p.residual ? 6 : 4), 4.0 * p.M * p.D}; }
Cost cost(const ops::LayerNorm& p) { return {4.0 * p.M * p.D, 5.0 * p.M * p.D}; }
Cost cost(const ops::Rope& p) { return {4.0 * p.M * p.H * p.rope_dim, 3.0 * p.M * p.H * p.rope_dim}; }
Cost cost(const ops::Hadamard& p) {
  double lg = 0;
  for (int64_t n = p.n; n > 1; n >>= 1) lg += 1;
  return {4.0 * p.M * p.n, double(p.M) * p.n * lg};
}
Cost cost(const ops::IndexerLogits& p) {
  double keys = 0;  // visible keys summed over query rows (device backend: N per row, exact in decode)
  int64_t max_end = 0;
  for (int64_t t = 0; t < p.S; ++t) {
    const int64_t e = g_inner->mem.device ? p.N : p.end[t];
    keys += double(e);
    max_end = std::max<int64_t>(max_end, e);
  }
  // One block table for all rows: each key is read once per call; else once per row.
  const double key_reads = p.k.bt_stride == 0 ? double(max_end) : keys;
  return {key_reads * double(p.k.D + 4) + 4.0 * p.S * p.N, 2.0 * p.H * p.k.D * keys + 2.0 * p.H * keys};
}
Cost cost(const ops::TopK& p) { return {4.0 * p.S * p.N + 4.0 * p.S * p.k, 0}; }
Cost cost(const ops::SparseMhaPrefill& p) {
  const double sel = double(valid_count(p.idx, p.S * p.K));
  const double kv_rows = std::min<double>(sel, double(p.T));  // each key/value row read at least once
  return {kv_rows * p.H * (p.d_qk + p.d_v) * 2.0 + 2.0 * p.S * p.H * (p.d_qk + p.d_v),
          2.0 * sel * p.H * (p.d_qk + p.d_v)};
}
Cost cost(const ops::SparseMlaDecode& p) {
  const double sel = double(valid_count(p.idx, p.S * p.K));
  const double L = double(p.layout.kv_lora), R = double(p.layout.rope);
  return {sel * double(p.layout.row_bytes()) + 2.0 * p.S * p.H * (2 * L + R), 2.0 * sel * p.H * (2 * L + R)};
}
Cost cost(const ops::HeadMatmul& p) {
  return {2.0 * p.H * p.K * p.N + 2.0 * p.S * p.H * (p.K + p.N), 2.0 * p.S * p.H * p.K * p.N};
}
Cost cost(const ops::MoeGate& p) { return {4.0 * p.T * p.E * 2, 4.0 * p.T * p.E}; }
Cost cost(const ops::SiluMul& p) { return {6.0 * p.M * p.N, 4.0 * p.M * p.N}; }
// Weights of the groups with rows only (read once each); on a device backend the offsets are not
// read back: min(G, R) groups count (exact in decode, where every choice is a distinct expert).
Cost cost(const ops::GroupedFp8Gemm& p) {
  int64_t busy = std::min(p.G, p.R);
  if (!g_inner->mem.device) {
    busy = 0;
    for (int64_t g = 0; g < p.G; ++g) busy += p.offsets[g + 1] > p.offsets[g];
  }
  const double w = double(p.N) * p.K + 4.0 * ops::ceil_div(p.N, 128) * ops::ceil_div(p.K, 128);
  return {busy * w + double(p.R) * p.K + 2.0 * p.R * p.N, 2.0 * p.R * p.N * p.K};
}
Cost cost(const ops::MoeRoute& p) { return {20.0 * p.S * p.k + 4.0 * (p.E + 1), 0}; }
Cost cost(const ops::MoeCombine& p) {
  return {double(p.S) * p.k * (2.0 * p.H + 8) + 8.0 * p.S * p.H, 2.0 * p.S * p.k * p.H};
}

// Device backends queue work asynchronously: synchronise around each op so its time is its own
// (a no-op on host backends).
#define DSA_BENCH_WRAP(fn, P, id)                 \
  void w_##fn(const ops::P& p) {                  \
    g_inner->mem.sync();                          \
    const double t0 = now_s();                    \
    g_inner->fn(p);                               \
    g_inner->mem.sync();                          \
    const double t1 = now_s();                    \
    account(id, t1 - t0, cost(p));                \
  }
DSA_BENCH_WRAP(act_quant, ActQuant, kActQuant)
DSA_BENCH_WRAP(fp8_gemm, Fp8Gemm, kFp8Gemm)
DSA_BENCH_WRAP(linear_f32, LinearF32, kLinearF32)
DSA_BENCH_WRAP(layer_norm, LayerNorm, kLayerNorm)
DSA_BENCH_WRAP(rope, Rope, kRope)
DSA_BENCH_WRAP(hadamard, Hadamard, kHadamard)
DSA_BENCH_WRAP(indexer_logits, IndexerLogits, kIndexerLogits)
DSA_BENCH_WRAP(topk, TopK, kTopK)
DSA_BENCH_WRAP(sparse_mha_prefill, SparseMhaPrefill, kSparseMhaPrefill)
DSA_BENCH_WRAP(sparse_mla_decode, SparseMlaDecode, kSparseMlaDecode)
DSA_BENCH_WRAP(head_matmul, HeadMatmul, kHeadMatmul)
DSA_BENCH_WRAP(moe_gate, MoeGate, kMoeGate)
DSA_BENCH_WRAP(silu_mul, SiluMul, kSiluMul)
DSA_BENCH_WRAP(grouped_fp8_gemm, GroupedFp8Gemm, kGroupedFp8Gemm)
DSA_BENCH_WRAP(moe_route, MoeRoute, kMoeRoute)
DSA_BENCH_WRAP(moe_combine, MoeCombine, kMoeCombine)
#undef DSA_BENCH_WRAP

void w_rms_norm(const ops::RmsNorm& p) {
  g_inner->mem.sync();
  const double t0 = now_s();
  if (p.D == g_hidden) g_marks.push_back(t0);  // attn_norm / ffn_norm / final norm
  g_inner->rms_norm(p);
  g_inner->mem.sync();
  const double t1 = now_s();
  account(kRmsNorm, t1 - t0, cost(p));
}

}  // namespace

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now() - g_origin).count(); }

const char* op_name(int op) {
  static const char* names[kNumOps] = {"act_quant",  "fp8_gemm",     "linear_f32",         "rms_norm",
                                       "layer_norm", "rope",         "hadamard",           "indexer_logits",
                                       "topk",       "sparse_mha_prefill", "sparse_mla_decode", "head_matmul",
                                       "moe_gate",   "silu_mul",     "grouped_fp8_gemm",   "moe_route",
                                       "moe_combine"};
  return names[op];
}

const ops::OpTable& timing_proxy(const ops::OpTable& inner, int64_t hidden) {
  g_inner = &inner;
  g_hidden = hidden;
  // A copy of the inner table (memory and data-movement entries pass through) with the compute
  // ops wrapped.
  static ops::OpTable table;
  table = inner;
  table.name = "timed";
  table.act_quant = &w_act_quant;
  table.fp8_gemm = &w_fp8_gemm;
  table.linear_f32 = &w_linear_f32;
  table.rms_norm = &w_rms_norm;
  table.layer_norm = &w_layer_norm;
  table.rope = &w_rope;
  table.hadamard = &w_hadamard;
  table.indexer_logits = &w_indexer_logits;
  table.topk = &w_topk;
  table.sparse_mha_prefill = &w_sparse_mha_prefill;
  table.sparse_mla_decode = &w_sparse_mla_decode;
  table.head_matmul = &w_head_matmul;
  table.moe_gate = &w_moe_gate;
  table.silu_mul = &w_silu_mul;
  table.grouped_fp8_gemm = &w_grouped_fp8_gemm;
  table.moe_route = &w_moe_route;
  table.moe_combine = &w_moe_combine;
  return table;
}

void proxy_reset() {
  g_stats = {};
  g_marks.clear();
}
OpStats proxy_stats() { return g_stats; }
std::vector<double> proxy_marks() { return g_marks; }

LayerTimes split_layers(const std::vector<double>& m, int64_t layers) {
  LayerTimes lt;
  if (int64_t(m.size()) != 2 * layers + 1) return lt;
  for (int64_t i = 0; i < layers; ++i) {
    lt.attn_ms.push_back(1e3 * (m[size_t(2 * i + 1)] - m[size_t(2 * i)]));
    lt.ffn_ms.push_back(1e3 * (m[size_t(2 * i + 2)] - m[size_t(2 * i + 1)]));
  }
  return lt;
}

}  // namespace dsa::app::bench
