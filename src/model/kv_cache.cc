// Paged KV memory.
#include "model/kv_cache.h"

#include <cstdio>
#include <cstring>
#include <limits>

#include "base/error.h"

namespace dsa {

KvCache::KvCache(const ModelConfig& c, int64_t page_size, int64_t max_pages, const ops::Memory& mem)
    : page_size_(page_size), max_pages_(max_pages), index_dim_(c.index_head_dim),
      latent_{c.kv_lora_rank, c.qk_rope_head_dim}, mem_(&mem) {
  DSA_CHECK(page_size > 0 && page_size <= 4096, "KV page size {} must be in [1, 4096]", page_size);
  DSA_CHECK(max_pages >= 0, "KV page budget must be >= 0");
  latent_pool_.assign(size_t(c.num_hidden_layers), nullptr);
  index_pool_.assign(size_t(c.num_hidden_layers), nullptr);
}

KvCache::~KvCache() {
  for (auto* p : latent_pool_) if (p) mem_->free(p);
  for (auto* p : index_pool_) if (p) mem_->free(p);
}

int64_t KvCache::free_pages() const {
  if (max_pages_ == 0) return std::numeric_limits<int64_t>::max();
  return max_pages_ - in_use_;
}

size_t KvCache::bytes() const { return size_t(capacity_) * bytes_per_page(); }

void KvCache::grow(int64_t pages) {
  if (pages <= capacity_) return;
  int64_t cap = std::max<int64_t>(pages, std::max<int64_t>(4, capacity_ * 2));
  if (max_pages_ > 0) cap = std::min(cap, max_pages_);
  // New pools, old contents copied over (device-to-device on a device backend), new pages zeroed.
  auto regrow = [&](std::vector<uint8_t*>& pools, size_t old_bytes, size_t new_bytes) {
    for (auto*& p : pools) {
      auto* q = static_cast<uint8_t*>(mem_->alloc(new_bytes));
      if (p) {
        mem_->copy(q, p, old_bytes, ops::CopyKind::kDeviceToDevice);
        mem_->free(p);
      }
      mem_->fill(q + old_bytes, 0, new_bytes - old_bytes);
      p = q;
    }
  };
  const size_t lrow = size_t(page_size_ * latent_.row_bytes()), ipage = size_t(index_page_bytes());
  regrow(latent_pool_, size_t(capacity_) * lrow, size_t(cap) * lrow);
  regrow(index_pool_, size_t(capacity_) * ipage, size_t(cap) * ipage);
  for (int64_t p = cap - 1; p >= capacity_; --p) free_list_.push_back(int32_t(p));
  refs_.resize(size_t(cap), 0);
  capacity_ = cap;
}

namespace {
// MemAvailable of /proc/meminfo in bytes (0 when it cannot be read).
size_t host_available_bytes() {
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return 0;
  char line[256];
  unsigned long long kb = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
  std::fclose(f);
  return size_t(kb) * 1024;
}
}  // namespace

void KvCache::preallocate() {
  DSA_CHECK(max_pages_ > 0, "preallocate needs a page budget");
  const double need = double(max_pages_ - capacity_) * double(bytes_per_page());
  // Host memory is checked against MemAvailable (allocation alone would succeed and only the
  // touching fail); a device allocation of the whole pool fails at once with the driver's error.
  const size_t avail = mem_->device ? 0 : host_available_bytes();
  DSA_CHECK(avail == 0 || need <= double(avail),
            "the KV cache budget of {} pages x {} tokens needs {:.2f} GB but only {:.2f} GB of {} memory is "
            "available; lower --kv-pages (at most ~{} pages fit)",
            max_pages_, page_size_, need / 1e9, double(avail) / 1e9, "host",
            int64_t(double(avail) / double(std::max<size_t>(bytes_per_page(), 1))));
  grow(max_pages_);
}

int32_t KvCache::alloc() {
  if (free_list_.empty()) {
    DSA_CHECK(max_pages_ == 0 || capacity_ < max_pages_, "KV cache full: all {} pages of {} tokens are in use",
              max_pages_, page_size_);
    grow(capacity_ + 1);
  }
  const int32_t p = free_list_.back();
  free_list_.pop_back();
  refs_[size_t(p)] = 1;
  ++in_use_;
  return p;
}

void KvCache::retain(int32_t page) {
  DSA_CHECK(page >= 0 && page < capacity_ && refs_[size_t(page)] > 0, "retain of a free page {}", page);
  ++refs_[size_t(page)];
}

void KvCache::release(int32_t page) {
  DSA_CHECK(page >= 0 && page < capacity_ && refs_[size_t(page)] > 0, "release of a free page {}", page);
  if (--refs_[size_t(page)] == 0) {
    free_list_.push_back(page);
    --in_use_;
  }
}

void KvCache::copy_page(int32_t dst, int32_t src) {
  const size_t lb = size_t(page_size_ * latent_.row_bytes()), ib = size_t(index_page_bytes());
  for (auto* p : latent_pool_) mem_->copy(p + dst * lb, p + src * lb, lb, ops::CopyKind::kDeviceToDevice);
  for (auto* p : index_pool_) mem_->copy(p + dst * ib, p + src * ib, ib, ops::CopyKind::kDeviceToDevice);
}

SequenceState& SequenceState::operator=(SequenceState&& o) noexcept {
  if (this != &o) {
    clear();
    kv_ = std::move(o.kv_);
    pages_ = std::move(o.pages_);
    len = o.len;
    o.len = 0;
  }
  return *this;
}

SequenceState SequenceState::fork(int64_t n) const {
  if (n < 0) n = len;
  DSA_CHECK(n <= len, "fork: {} tokens requested of a {}-token sequence", n, len);
  SequenceState s(kv_);
  const int64_t ps = kv_->page_size(), full = n / ps, partial = n % ps;
  for (int64_t i = 0; i < full; ++i) {
    kv_->retain(pages_[size_t(i)]);
    s.pages_.push_back(pages_[size_t(i)]);
  }
  if (partial > 0) {
    const int32_t p = kv_->alloc();
    kv_->copy_page(p, pages_[size_t(full)]);
    s.pages_.push_back(p);
  }
  s.len = n;
  return s;
}

void SequenceState::reserve(int64_t extra) {
  const int64_t ps = kv_->page_size();
  const int64_t need = (len + extra + ps - 1) / ps;
  // The page being appended to must be ours alone (shared pages are always full ones).
  if (len % ps != 0 && !pages_.empty()) {
    const int32_t last = pages_[size_t(len / ps)];
    if (kv_->refcount(last) > 1) {
      const int32_t p = kv_->alloc();
      kv_->copy_page(p, last);
      kv_->release(last);
      pages_[size_t(len / ps)] = p;
    }
  }
  while (int64_t(pages_.size()) < need) pages_.push_back(kv_->alloc());
}

void SequenceState::clear() {
  if (kv_)
    for (int32_t p : pages_) kv_->release(p);
  pages_.clear();
  len = 0;
}

size_t SequenceState::bytes() const { return pages_.size() * kv_->bytes_per_page(); }

}  // namespace dsa
