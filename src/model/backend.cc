// Backend memory cache and transfers.
#include "model/backend.h"

#include <bit>

namespace dsa {

struct Backend::Cache {
  const ops::Memory* mem;
  std::mutex mu;
  std::multimap<size_t, void*> free_blocks;  // bucket size → block
  size_t live = 0, peak = 0;                 // bytes of the blocks handed out by alloc
  ~Cache() {
    for (auto& [sz, p] : free_blocks) mem->free(p);
  }
};

Backend::Backend(const ops::OpTable& ops) : ops_(&ops), cache_(std::make_shared<Cache>()) { cache_->mem = &ops.mem; }

Backend::~Backend() = default;

void Backend::set_ops(const ops::OpTable& ops) {
  DSA_CHECK(ops.mem.device == ops_->mem.device && ops.mem.alloc == ops_->mem.alloc,
            "cannot switch from backend {} to {}: their memory differs (reload the model)", ops_->name, ops.name);
  ops_ = &ops;
}

Tensor Backend::alloc(DType dtype, Shape shape) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  for (int64_t d : t.shape) DSA_CHECK(d >= 0, "negative dimension in shape {}", shape_str(t.shape));
  // Buckets: powers of two from 256 B, so temporaries of similar size reuse blocks.
  const size_t bytes = std::max<size_t>(t.nbytes(), 256);
  const size_t bucket = std::bit_ceil(bytes);
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(cache_->mu);
    auto it = cache_->free_blocks.find(bucket);
    if (it != cache_->free_blocks.end()) {
      p = it->second;
      cache_->free_blocks.erase(it);
    }
    cache_->live += bucket;  // counted under the lookup's lock; taken back if the allocation fails
    cache_->peak = std::max(cache_->peak, cache_->live);
  }
  if (!p) {
    try {
      p = ops_->mem.alloc(bucket);
    } catch (...) {
      std::lock_guard<std::mutex> lock(cache_->mu);
      cache_->live -= bucket;
      throw;
    }
  }
  std::shared_ptr<Cache> cache = cache_;
  t.data = p;
  t.owner = std::shared_ptr<void>(p, [cache, bucket](void* q) {
    std::lock_guard<std::mutex> lock(cache->mu);
    cache->live -= bucket;
    cache->free_blocks.emplace(bucket, q);
  });
  return t;
}

Tensor Backend::upload(const void* host, DType dtype, Shape shape) {
  Tensor t = alloc(dtype, std::move(shape));
  ops_->mem.copy(t.data, host, t.nbytes(), ops::CopyKind::kHostToDevice);
  return t;
}

void Backend::download(const Tensor& t, void* host) const {
  ops_->mem.copy(host, t.data, t.nbytes(), ops::CopyKind::kDeviceToHost);
}

Tensor Backend::mirror(const Tensor& host) const {
  if (!device()) return host;
  Tensor t;
  t.dtype = host.dtype;
  t.shape = host.shape;
  const ops::Memory* mem = &ops_->mem;
  void* p = mem->alloc(std::max<size_t>(host.nbytes(), 1));
  mem->copy(p, host.data, host.nbytes(), ops::CopyKind::kHostToDevice);
  t.data = p;
  t.owner = std::shared_ptr<void>(p, [mem](void* q) { mem->free(q); });
  return t;
}

size_t Backend::live_bytes() const {
  std::lock_guard<std::mutex> lock(cache_->mu);
  return cache_->live;
}

size_t Backend::peak_bytes() const {
  std::lock_guard<std::mutex> lock(cache_->mu);
  return cache_->peak;
}

void Backend::reset_peak() {
  std::lock_guard<std::mutex> lock(cache_->mu);
  cache_->peak = cache_->live;
}

void Backend::release_cache() {
  std::lock_guard<std::mutex> lock(cache_->mu);
  for (auto& [sz, p] : cache_->free_blocks) ops_->mem.free(p);
  cache_->free_blocks.clear();
}

}  // namespace dsa
