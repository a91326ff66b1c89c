// Paged KV memory shared by sequences: per layer, a pool of latent rows (deployment layout, 656 B
// at V3.2 dims) and a pool of indexer-key pages ([page_size*D fp8][page_size fp32 scales]).
// Pages are reference-counted so sequences can share a common prompt prefix.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "model/config.h"
#include "ops/ops.h"

namespace dsa {

class KvCache {
 public:
  // max_pages = 0: grow without limit (single-sequence use); otherwise a hard budget. The pools
  // live in `mem` (host memory by default; the model's backend memory via Model::make_kv_cache).
  KvCache(const ModelConfig& c, int64_t page_size = 64, int64_t max_pages = 0,
          const ops::Memory& mem = ops::host_memory());
  ~KvCache();
  KvCache(const KvCache&) = delete;

  int64_t page_size() const { return page_size_; }
  int64_t max_pages() const { return max_pages_; }
  int64_t pages_in_use() const { return in_use_; }
  int64_t free_pages() const;  // pages that can still be allocated (INT64_MAX if unbounded)
  int64_t capacity() const { return capacity_; }  // pages backed by memory now
  const ops::LatentLayout& latent_layout() const { return latent_; }
  int64_t index_dim() const { return index_dim_; }
  int64_t index_page_bytes() const { return page_size_ * (index_dim_ + 4); }
  size_t bytes() const;  // memory held by the pools
  size_t bytes_per_page() const {  // all layers
    return latent_pool_.size() * size_t(page_size_ * latent_.row_bytes() + index_page_bytes());
  }
  const ops::Memory& memory() const { return *mem_; }

  // Backs the whole budget with memory now, in one allocation per pool, after checking that host
  // memory has that much available (a budget beyond memory is refused at once, not discovered
  // page by page; on a device the one allocation fails at once). Needs max_pages > 0.
  void preallocate();
  int32_t alloc();  // throws dsa::Error when the budget is exhausted
  void retain(int32_t page);
  void release(int32_t page);
  int32_t refcount(int32_t page) const { return refs_.at(size_t(page)); }
  // Copies one page's rows (all layers) into another (copy-on-write of a shared partial page).
  void copy_page(int32_t dst, int32_t src);

  uint8_t* latent(int64_t layer) { return latent_pool_[size_t(layer)]; }  // [capacity*page_size, row_bytes]
  uint8_t* index(int64_t layer) { return index_pool_[size_t(layer)]; }    // [capacity, index_page_bytes]

 private:
  void grow(int64_t pages);
  int64_t page_size_, max_pages_, index_dim_, capacity_ = 0, in_use_ = 0;
  ops::LatentLayout latent_;
  const ops::Memory* mem_;
  std::vector<uint8_t*> latent_pool_, index_pool_;
  std::vector<int32_t> refs_, free_list_;
};

// One sequence: its pages (shared with others where the prefix is shared) and its length.
// Move-only; releases its pages when destroyed.
class SequenceState {
 public:
  explicit SequenceState(std::shared_ptr<KvCache> kv) : kv_(std::move(kv)) {}
  SequenceState(SequenceState&&) noexcept = default;
  SequenceState& operator=(SequenceState&&) noexcept;
  SequenceState(const SequenceState&) = delete;
  ~SequenceState() { clear(); }

  // A new sequence sharing this one's first n tokens (full pages shared, a partial last page
  // copied). n defaults to the whole sequence.
  SequenceState fork(int64_t n = -1) const;
  // Makes room for `extra` more tokens (allocates pages); throws when the cache is full.
  void reserve(int64_t extra);
  void clear();  // releases every page; len = 0

  int64_t len = 0;
  KvCache& kv() const { return *kv_; }
  const std::vector<int32_t>& pages() const { return pages_; }
  // Physical latent row of token t (page * page_size + slot).
  int64_t row(int64_t t) const { return int64_t(pages_[size_t(t / kv_->page_size())]) * kv_->page_size() + t % kv_->page_size(); }
  size_t bytes() const;  // cache bytes attributable to this sequence's pages

 private:
  std::shared_ptr<KvCache> kv_;
  std::vector<int32_t> pages_;
};

}  // namespace dsa
