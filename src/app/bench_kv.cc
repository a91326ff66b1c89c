// Synthetic KV caches for `dsa bench`: random but valid FP8 latent rows (power-of-two scales,
// bf16 RoPE part) and indexer-key pages written straight into the KvCache pools.
#include <cstring>

#include "app/bench.h"
#include "base/error.h"

namespace dsa::app::bench {

namespace {

struct Rng {
  uint64_t s;
  uint64_t next() {  // splitmix64
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform() { return float(next() >> 40) * (1.0f / float(1 << 24)) * 2.0f - 1.0f; }  // [-1, 1)
};

// 8 random FP8 e4m3fn codes, NaN codes (0x7f, 0xff) replaced by ±448 (0x7e, 0xfe).
void fill_fp8(uint8_t* dst, int64_t n, Rng& r) {
  for (int64_t i = 0; i < n; i += 8) {
    uint64_t v = r.next();
    uint8_t b[8];
    std::memcpy(b, &v, 8);
    for (int k = 0; k < 8 && i + k < n; ++k) dst[i + k] = (b[k] & 0x7f) == 0x7f ? uint8_t(b[k] - 1) : b[k];
  }
}

float pow2_scale(Rng& r) { return std::ldexp(1.0f, -6 - int(r.next() % 4)); }  // 2^-6 .. 2^-9

}  // namespace

void fill_synthetic(SequenceState& st, const ModelConfig& c, int64_t ctx, uint64_t seed) {
  DSA_CHECK(st.len == 0, "fill_synthetic: the sequence is not empty");
  st.reserve(ctx);
  KvCache& kv = st.kv();
  const ops::LatentLayout lay = kv.latent_layout();
  const int64_t lb = lay.row_bytes(), nsb = ops::ceil_div(lay.kv_lora, ops::kBlock);
  const int64_t ps = kv.page_size(), D = kv.index_dim(), pb = kv.index_page_bytes();
  Rng r{seed};
  // Pages are filled in host staging buffers and copied into the pools (device memory too).
  const ops::Memory& mem = kv.memory();
  std::vector<uint8_t> lat_page(static_cast<size_t>(ps * lb)), idx_page(static_cast<size_t>(pb));
  const int64_t npages = (ctx + ps - 1) / ps;
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    for (int64_t p = 0; p < npages; ++p) {
      const int64_t page = st.pages()[size_t(p)];
      for (int64_t slot = 0; slot < ps; ++slot) {
        uint8_t* row = lat_page.data() + slot * lb;
        fill_fp8(row, lay.kv_lora, r);
        for (int64_t b = 0; b < nsb; ++b) {
          const float s = pow2_scale(r);
          std::memcpy(row + lay.scale_off() + 4 * b, &s, 4);
        }
        for (int64_t i = 0; i < lay.rope; ++i) {
          const bf16 v = f32_to_bf16(r.uniform());
          std::memcpy(row + lay.rope_off() + 2 * i, &v.bits, 2);
        }
      }
      mem.copy(kv.latent(layer) + page * ps * lb, lat_page.data(), lat_page.size(), ops::CopyKind::kHostToDevice);
      fill_fp8(idx_page.data(), ps * D, r);
      for (int64_t k = 0; k < ps; ++k) {
        const float s = pow2_scale(r);
        std::memcpy(idx_page.data() + ps * D + 4 * k, &s, 4);
      }
      mem.copy(kv.index(layer) + page * pb, idx_page.data(), idx_page.size(), ops::CopyKind::kHostToDevice);
    }
  }
  st.len = ctx;
}

}  // namespace dsa::app::bench
