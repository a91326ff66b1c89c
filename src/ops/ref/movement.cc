// Host memory and the data-movement ops (copy_rows, convert, indexer_weights, paged_rows,
// scale_add) of the host backends; ref and cpu share them.
#include <cstdlib>
#include <cstring>

#include "ops/ref/ref_util.h"

namespace dsa::ops {

namespace {
void* host_alloc(size_t bytes) {
  void* p = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256 * (bytes == 0));
  DSA_CHECK(p != nullptr, "out of host memory allocating {} bytes", bytes);
  return p;
}
void host_free(void* p) { std::free(p); }
void host_copy(void* dst, const void* src, size_t bytes, CopyKind) {
  if (bytes) std::memcpy(dst, src, bytes);
}
void host_fill(void* dst, uint8_t byte, size_t bytes) { std::memset(dst, byte, bytes); }
void host_sync() {}
}  // namespace

const Memory& host_memory() {
  static const Memory m = {false, &host_alloc, &host_free, &host_copy, &host_fill, &host_sync};
  return m;
}

namespace ref {

void copy_rows(const CopyRows& p) {
  DSA_CHECK(p.n >= 0 && p.row_bytes >= 0, "copy_rows: bad dims n={} row_bytes={}", p.n, p.row_bytes);
  for (int64_t i = 0; i < p.n; ++i) {
    const uint8_t* s = p.src + (p.src_off ? p.src_off[i] : i * p.src_stride);
    uint8_t* d = p.dst + (p.dst_off ? p.dst_off[i] : i * p.dst_stride);
    std::memmove(d, s, size_t(p.row_bytes));
  }
}

void convert(const Convert& p) {
  if (p.to_f32) {
    const bf16* s = static_cast<const bf16*>(p.src);
    float* d = static_cast<float*>(p.dst);
    for (int64_t i = 0; i < p.n; ++i) d[i] = ld(s[i]);
  } else {
    const float* s = static_cast<const float*>(p.src);
    bf16* d = static_cast<bf16*>(p.dst);
    for (int64_t i = 0; i < p.n; ++i) d[i] = st(s[i]);
  }
}

void indexer_weights(const IndexerWeights& p) {
  for (int64_t i = 0; i < p.n; ++i) p.w[i] = ((p.w[i] * p.c1) * p.q_s[i]) * p.c2;
}

void paged_rows(const PagedRows& p) {
  DSA_CHECK(p.page_size > 0, "paged_rows: page_size {}", p.page_size);
  for (int64_t s = 0; s < p.S; ++s)
    for (int64_t j = 0; j < p.K; ++j) {
      const int32_t t = p.idx[s * p.K + j];
      p.phys[s * p.K + j] =
          t < 0 ? -1 : int32_t(int64_t(p.block_table[s * p.bt_stride + t / p.page_size]) * p.page_size + t % p.page_size);
    }
}

void scale_add(const ScaleAdd& p) {
  for (int64_t i = 0; i < p.M; ++i) {
    float* a = p.acc + (p.rows ? int64_t(p.rows[i]) : i) * p.H;
    const bf16* y = p.y + i * p.H;
    if (p.w) {
      const float w = p.w[i];
      for (int64_t d = 0; d < p.H; ++d) a[d] += ld(y[d]) * w;
    } else {
      for (int64_t d = 0; d < p.H; ++d) a[d] += ld(y[d]);
    }
  }
}

}  // namespace ref
}  // namespace dsa::ops
