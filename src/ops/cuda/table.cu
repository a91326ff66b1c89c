// The CUDA backend's OpTable: device memory through cudaMalloc, every op queued on one stream of
// the backend's own; registered as "cuda" in ops/backends.h by register_cuda_backend().
#include <algorithm>
#include <cstring>
#include <deque>
#include <mutex>
#include <vector>

#include "ops/backends.h"
#include "ops/cuda/cuda_ops.h"

namespace dsa::ops::cuda {

cudaStream_t backend_stream() {
  // Created on first use, so that a binary built with CUDA runs on machines without a GPU as
  // long as it never selects this backend. Never destroyed (lives until process exit).
  static std::once_flag once;
  static cudaStream_t s = nullptr;
  std::call_once(once, [] { CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); });
  return s;
}

namespace {

void* dev_alloc(size_t bytes) {
  void* p = nullptr;
  CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 256)));  // 256-byte aligned
  return p;
}

void dev_free(void* p) {
  if (p) CUDA_CHECK(cudaFree(p));  // synchronises the device: work still using p finishes first
}

// Host-to-device copies without draining the stream: the bytes go into a pinned ring first (the
// caller's buffer may be pageable and die right after the call), then the transfer is queued
// behind the kernels already on the stream. A ring region is reused only once the event recorded
// behind its transfer has completed; regions are handed out in order, so the oldest pending
// transfers are the ones a new region can overlap. Big copies (weights at load) bypass it.
class Staging {
 public:
  static constexpr size_t kSize = size_t(64) << 20, kMaxCopy = kSize / 4;

  void copy(void* dst, const void* src, size_t bytes, cudaStream_t s) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!base_) CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&base_), kSize, cudaHostAllocDefault));
    const size_t need = (bytes + 255) / 256 * 256;
    if (head_ + need > kSize) head_ = 0;
    while (!pending_.empty() && pending_.front().begin < head_ + need && head_ < pending_.front().end) {
      CUDA_CHECK(cudaEventSynchronize(pending_.front().done));
      spare_.push_back(pending_.front().done);
      pending_.pop_front();
    }
    std::memcpy(base_ + head_, src, bytes);
    CUDA_CHECK(cudaMemcpyAsync(dst, base_ + head_, bytes, cudaMemcpyHostToDevice, s));
    cudaEvent_t ev = nullptr;
    if (spare_.empty()) {
      CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    } else {
      ev = spare_.back();
      spare_.pop_back();
    }
    CUDA_CHECK(cudaEventRecord(ev, s));
    pending_.push_back({head_, head_ + need, ev});
    head_ += need;
  }

 private:
  struct Region {
    size_t begin, end;
    cudaEvent_t done;
  };
  std::mutex mu_;
  uint8_t* base_ = nullptr;  // pinned, lives until process exit
  size_t head_ = 0;
  std::deque<Region> pending_;
  std::vector<cudaEvent_t> spare_;
};

void dev_copy(void* dst, const void* src, size_t bytes, CopyKind kind) {
  if (bytes == 0) return;
  const cudaStream_t s = backend_stream();
  static Staging staging;
  switch (kind) {
    case CopyKind::kHostToDevice:
      if (bytes <= Staging::kMaxCopy) {
        staging.copy(dst, src, bytes, s);
      } else {  // pageable source: wait for the copy before the caller may free it
        CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
        CUDA_CHECK(cudaStreamSynchronize(s));
      }
      break;
    case CopyKind::kDeviceToHost:
      CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
      CUDA_CHECK(cudaStreamSynchronize(s));  // D2H completes before return (ops.h)
      break;
    case CopyKind::kDeviceToDevice:
      CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s));
      break;
  }
}

void dev_fill(void* dst, uint8_t byte, size_t bytes) {
  if (bytes) CUDA_CHECK(cudaMemsetAsync(dst, byte, bytes, backend_stream()));
}

void dev_sync() { CUDA_CHECK(cudaStreamSynchronize(backend_stream())); }

// Every table entry forwards to the kernel of the same name on the backend stream.
#define DSA_CUDA_ENTRY(op, P) \
  void t_##op(const P& p) { op(p, backend_stream()); }
DSA_CUDA_ENTRY(act_quant, ActQuant)
DSA_CUDA_ENTRY(fp8_gemm, Fp8Gemm)
DSA_CUDA_ENTRY(grouped_fp8_gemm, GroupedFp8Gemm)
DSA_CUDA_ENTRY(linear_f32, LinearF32)
DSA_CUDA_ENTRY(rms_norm, RmsNorm)
DSA_CUDA_ENTRY(layer_norm, LayerNorm)
DSA_CUDA_ENTRY(rope, Rope)
DSA_CUDA_ENTRY(hadamard, Hadamard)
DSA_CUDA_ENTRY(indexer_logits, IndexerLogits)
DSA_CUDA_ENTRY(topk, TopK)
DSA_CUDA_ENTRY(sparse_mha_prefill, SparseMhaPrefill)
DSA_CUDA_ENTRY(head_matmul, HeadMatmul)
DSA_CUDA_ENTRY(moe_gate, MoeGate)
DSA_CUDA_ENTRY(silu_mul, SiluMul)
DSA_CUDA_ENTRY(moe_route, MoeRoute)
DSA_CUDA_ENTRY(moe_combine, MoeCombine)
DSA_CUDA_ENTRY(copy_rows, CopyRows)
DSA_CUDA_ENTRY(convert, Convert)
DSA_CUDA_ENTRY(indexer_weights, IndexerWeights)
DSA_CUDA_ENTRY(paged_rows, PagedRows)
DSA_CUDA_ENTRY(scale_add, ScaleAdd)
DSA_CUDA_ENTRY(gemm, Gemm)
DSA_CUDA_ENTRY(dequant, Dequant)
DSA_CUDA_ENTRY(weight_quant, WeightQuant)
DSA_CUDA_ENTRY(rms_norm_bwd, RmsNormBwd)
DSA_CUDA_ENTRY(layer_norm_bwd, LayerNormBwd)
DSA_CUDA_ENTRY(rope_bwd, RopeBwd)
DSA_CUDA_ENTRY(hadamard_f32, HadamardF32)
DSA_CUDA_ENTRY(sparse_mla_bwd_q, SparseMlaBwdQ)
DSA_CUDA_ENTRY(sparse_mla_bwd_kv, SparseMlaBwdKv)
DSA_CUDA_ENTRY(silu_mul_bwd, SiluMulBwd)
DSA_CUDA_ENTRY(moe_gate_bwd, MoeGateBwd)
DSA_CUDA_ENTRY(moe_combine_bwd, MoeCombineBwd)
DSA_CUDA_ENTRY(scatter_add_rows, ScatterAddRows)
DSA_CUDA_ENTRY(logits_grad, LogitsGrad)
DSA_CUDA_ENTRY(adamw, AdamW)
DSA_CUDA_ENTRY(sum_squares, SumSquares)
DSA_CUDA_ENTRY(axpy, Axpy)
DSA_CUDA_ENTRY(indexer_kl, IndexerKl)
DSA_CUDA_ENTRY(indexer_logits_bwd, IndexerLogitsBwd)
DSA_CUDA_ENTRY(mask_logits, MaskLogits)
#undef DSA_CUDA_ENTRY

const GradTable& cuda_grad_ops() {
  static const GradTable t = {&t_gemm,          &t_dequant,          &t_weight_quant,  &t_rms_norm_bwd,
                              &t_layer_norm_bwd, &t_rope_bwd,        &t_hadamard_f32,  &t_sparse_mla_bwd_q,
                              &t_sparse_mla_bwd_kv, &t_silu_mul_bwd, &t_moe_gate_bwd,  &t_moe_combine_bwd,
                              &t_scatter_add_rows, &t_logits_grad,   &t_adamw,         &t_sum_squares,
                              &t_axpy,          &t_indexer_kl,       &t_indexer_logits_bwd, &t_mask_logits};
  return t;
}

// Grow-only device buffer for the head padding below (separate from workspace(), which the MLA
// kernels use themselves). Stream order makes reuse across calls safe.
uint8_t* pad_buffer(size_t bytes) {
  static std::mutex mu;
  static void* buf = nullptr;
  static size_t cap = 0;
  std::lock_guard<std::mutex> lock(mu);
  if (bytes > cap) {
    if (buf) {
      CUDA_CHECK(cudaStreamSynchronize(backend_stream()));
      CUDA_CHECK(cudaFree(buf));
      buf = nullptr;
    }
    cap = bytes + bytes / 4;
    CUDA_CHECK(cudaMalloc(&buf, cap));
  }
  return static_cast<uint8_t*>(buf);
}

// The MLA decode kernels need H % 16 == 0. Fewer heads (the tiny/demo presets have 4) run with
// q zero-padded to the next multiple of 16 heads: every head's output depends on its own q only,
// so the real heads' results are those of an unpadded run; the padded outputs are dropped.
void t_sparse_mla_decode(const SparseMlaDecode& p) {
  const cudaStream_t s = backend_stream();
  if (p.H <= 0 || p.S <= 0 || p.H % 16 == 0) return sparse_mla_decode(p, s);
  const int64_t H = p.H, Hp = ceil_div(H, 16) * 16, L = p.layout.kv_lora, R = p.layout.rope, S = p.S;
  auto up = [](int64_t b) { return size_t((b + 255) / 256 * 256); };
  const size_t qa_b = up(S * Hp * L * 2), qp_b = up(S * Hp * R * 2), o_b = up(S * Hp * L * 2);
  uint8_t* b = pad_buffer(qa_b + qp_b + o_b);
  CUDA_CHECK(cudaMemsetAsync(b, 0, qa_b + qp_b, s));
  CUDA_CHECK(cudaMemcpy2DAsync(b, size_t(Hp * L * 2), p.q_abs, size_t(H * L * 2), size_t(H * L * 2), size_t(S),
                               cudaMemcpyDeviceToDevice, s));
  if (R > 0)
    CUDA_CHECK(cudaMemcpy2DAsync(b + qa_b, size_t(Hp * R * 2), p.q_pe, size_t(H * R * 2), size_t(H * R * 2),
                                 size_t(S), cudaMemcpyDeviceToDevice, s));
  SparseMlaDecode q = p;
  q.H = Hp;
  q.q_abs = reinterpret_cast<const bf16*>(b);
  q.q_pe = R > 0 ? reinterpret_cast<const bf16*>(b + qa_b) : p.q_pe;
  q.o_lat = reinterpret_cast<bf16*>(b + qa_b + qp_b);
  sparse_mla_decode(q, s);
  CUDA_CHECK(cudaMemcpy2DAsync(p.o_lat, size_t(H * L * 2), q.o_lat, size_t(Hp * L * 2), size_t(H * L * 2), size_t(S),
                               cudaMemcpyDeviceToDevice, s));
}

}  // namespace

const OpTable& cuda_ops() {
  static const OpTable t = {
      "cuda",
      Memory{true, &dev_alloc, &dev_free, &dev_copy, &dev_fill, &dev_sync},
      &t_act_quant,
      &t_fp8_gemm,
      &t_grouped_fp8_gemm,
      &t_linear_f32,
      &t_rms_norm,
      &t_layer_norm,
      &t_rope,
      &t_hadamard,
      &t_indexer_logits,
      &t_topk,
      &t_sparse_mha_prefill,
      &t_sparse_mla_decode,
      &t_head_matmul,
      &t_moe_gate,
      &t_silu_mul,
      &t_moe_route,
      &t_moe_combine,
      &t_copy_rows,
      &t_convert,
      &t_indexer_weights,
      &t_paged_rows,
      &t_scale_add,
      &cuda_grad_ops(),
  };
  return t;
}

void register_cuda_backend() { register_backend("cuda", cuda_ops()); }

}  // namespace dsa::ops::cuda
