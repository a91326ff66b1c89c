// CUDA backend of the op API: same parameter structs as ops/ops.h, every pointer a DEVICE pointer.
// Calls are asynchronous on `stream`; launch errors are reported as dsa::Error with file:line.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

#include "ops/grad.h"
#include "ops/ops.h"

namespace dsa::ops::cuda {

// Throws dsa::Error("file:line: CUDA error ...") (host code; keeps fmt out of nvcc).
[[noreturn]] void cuda_fail(cudaError_t e, const char* expr, const char* file, int line);
[[noreturn]] void arg_fail(const char* msg, const char* file, int line);

#define CUDA_CHECK(expr)                                                          \
  do {                                                                            \
    const cudaError_t dsa_e_ = (expr);                                            \
    if (dsa_e_ != cudaSuccess) ::dsa::ops::cuda::cuda_fail(dsa_e_, #expr, __FILE__, __LINE__); \
  } while (0)
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
#define DSA_CUDA_REQUIRE(cond, msg) \
  do {                              \
    if (!(cond)) ::dsa::ops::cuda::arg_fail(msg, __FILE__, __LINE__); \
  } while (0)

// Grow-only scratch memory shared by the ops that need it (sparse_mla_decode). Not thread-safe
// across streams: ops on different streams must not run concurrently.
void* workspace(size_t bytes, cudaStream_t stream);
// Streaming multiprocessors of the current device (read once).
int sm_count();

void act_quant(const ActQuant& p, cudaStream_t stream);
void fp8_gemm(const Fp8Gemm& p, cudaStream_t stream);
// One launch for all groups (tiles found from offsets on the device; no host sync).
void grouped_fp8_gemm(const GroupedFp8Gemm& p, cudaStream_t stream);
// FP8 GEMMs and the indexer use the Hopper FP8 warpgroup MMA (wgmma) kernels when on: faster, but
// the FP8 tensor cores accumulate below fp32 precision (the golden test's layer-0 GEMM outputs
// move by up to 4 bf16 ulps and decisions drift), so the default is off: exact kernels (e4m3
// converted to f16, exact products, fp32 accumulation). Initial value from DSA_FP8_WGMMA=1.
bool fp8_wgmma();
void set_fp8_wgmma(bool on);
// Exact FP8 GEMMs of more than 16 token rows: the tiled mma.sync kernel when on (tests: the decode
// kernel is bit-identical to it by construction) instead of the f16 wgmma kernel. Default off.
bool fp8_mma_sync();
void set_fp8_mma_sync(bool on);
void linear_f32(const LinearF32& p, cudaStream_t stream);
void rms_norm(const RmsNorm& p, cudaStream_t stream);
void layer_norm(const LayerNorm& p, cudaStream_t stream);
void rope(const Rope& p, cudaStream_t stream);
void hadamard(const Hadamard& p, cudaStream_t stream);
// Fast path: D == 128, H <= 64, page_size % 4 == 0, 16-byte aligned pool (wgmma, FP8 tensor
// cores); anything else takes a scalar fallback. end[] is read on the device (no host sync).
void indexer_logits(const IndexerLogits& p, cudaStream_t stream);
void topk(const TopK& p, cudaStream_t stream);
void sparse_mha_prefill(const SparseMhaPrefill& p, cudaStream_t stream);
// Fast path: kv_lora % 64 == 0, rope % 16 == 0, H % 16 == 0 (bf16 MMA). idx >= N counts as -1.
void sparse_mla_decode(const SparseMlaDecode& p, cudaStream_t stream);
// sparse_mla_decode's kernel choice, for tests and benchmarks. kernel: 0 = the fastest that fits,
// 1 = skip the warp-specialised kernel (fused), 2 = two-pass only; splits > 0 forces the key-split
// count of the split-K kernels. Initial values from DSA_MLA_KERNEL=fused|twopass, DSA_MLA_SPLITS=n.
struct MlaOptions {
  int kernel = 0;
  int64_t splits = 0;
};
MlaOptions& mla_options();
// Batch-invariant arithmetic (RL: rollout/trainer log-probs equal on the GPU): every kernel whose
// summation order would depend on the number of rows in the call (split-KV decode attention, the
// few-row GEMV of linear_f32) takes its many-row form instead, so a row's result is the same in a
// decode step of any batch as in the trainer's forward. Off by default (decode is slower);
// DSA_BATCH_INVARIANT=1 turns it on at start.
bool batch_invariant();
void set_batch_invariant(bool on);
void head_matmul(const HeadMatmul& p, cudaStream_t stream);
void moe_gate(const MoeGate& p, cudaStream_t stream);
// Routing table in one single-block launch (stable counting sort, deterministic); out-of-range
// expert ids get pos = -1 and no row. Combine: one block per token, fp32 mul then add (no FMA).
void moe_route(const MoeRoute& p, cudaStream_t stream);
void moe_combine(const MoeCombine& p, cudaStream_t stream);
void silu_mul(const SiluMul& p, cudaStream_t stream);

// Data movement (movement.cu), semantics as in ops/ops.h.
void copy_rows(const CopyRows& p, cudaStream_t stream);
void convert(const Convert& p, cudaStream_t stream);
void indexer_weights(const IndexerWeights& p, cudaStream_t stream);
void paged_rows(const PagedRows& p, cudaStream_t stream);
void scale_add(const ScaleAdd& p, cudaStream_t stream);

// Training ops (ops/grad.h; grad.cu, grad_gemm.cu), semantics as there; reductions in a fixed order.
void gemm(const Gemm& p, cudaStream_t stream);  // cuBLAS: bf16 x bf16 on tensor cores (fp32 acc), else fp32
void dequant(const Dequant& p, cudaStream_t stream);
void weight_quant(const WeightQuant& p, cudaStream_t stream);
void rms_norm_bwd(const RmsNormBwd& p, cudaStream_t stream);
void layer_norm_bwd(const LayerNormBwd& p, cudaStream_t stream);
void rope_bwd(const RopeBwd& p, cudaStream_t stream);
void hadamard_f32(const HadamardF32& p, cudaStream_t stream);
void indexer_kl(const IndexerKl& p, cudaStream_t stream);                 // grad_indexer.cu
void indexer_logits_bwd(const IndexerLogitsBwd& p, cudaStream_t stream);
void sparse_mla_bwd_q(const SparseMlaBwdQ& p, cudaStream_t stream);
void sparse_mla_bwd_kv(const SparseMlaBwdKv& p, cudaStream_t stream);
void silu_mul_bwd(const SiluMulBwd& p, cudaStream_t stream);
void moe_gate_bwd(const MoeGateBwd& p, cudaStream_t stream);
void moe_combine_bwd(const MoeCombineBwd& p, cudaStream_t stream);
void scatter_add_rows(const ScatterAddRows& p, cudaStream_t stream);
void logits_grad(const LogitsGrad& p, cudaStream_t stream);
void mask_logits(const MaskLogits& p, cudaStream_t stream);
void adamw(const AdamW& p, cudaStream_t stream);
void sum_squares(const SumSquares& p, cudaStream_t stream);
void axpy(const Axpy& p, cudaStream_t stream);

// The backend's op table (table.cu): device memory (cudaMalloc) and every op on one stream of
// its own, created on first use. register_cuda_backend() adds it to ops/backends.h as "cuda".
const OpTable& cuda_ops();
cudaStream_t backend_stream();
void register_cuda_backend();

// Device-to-device copy through a plain vectorised kernel (bandwidth probe for the bench).
void copy_bytes(void* dst, const void* src, size_t bytes, cudaStream_t stream);
// Fills bytes with a hash of (seed, offset) AND `mask` (e.g. 0x3f: finite fp8, positive floats).
void fill_hash(void* dst, size_t bytes, uint32_t seed, uint8_t mask, cudaStream_t stream);

}  // namespace dsa::ops::cuda
