// The model's handle on its op backend: the op table plus a size-bucketed cache of backend
// memory for temporaries, and upload/download helpers. Host backends (ref, cpu) and device
// backends (cuda) run the same model code through it.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "base/tensor.h"
#include "ops/ops.h"

namespace dsa {

class Backend {
 public:
  explicit Backend(const ops::OpTable& ops);
  ~Backend();
  Backend(const Backend&) = delete;

  const ops::OpTable& ops() const { return *ops_; }
  void set_ops(const ops::OpTable& ops);  // same memory kind only
  bool device() const { return ops_->mem.device; }

  // Backend tensor (contents undefined); its memory returns to the cache when the last copy dies.
  Tensor alloc(DType dtype, Shape shape);
  Tensor upload(const void* host, DType dtype, Shape shape);
  template <class T>
  Tensor upload(const std::vector<T>& v, DType dtype) {
    return upload(v.data(), dtype, {int64_t(v.size())});
  }
  void download(const Tensor& t, void* host) const;
  template <class T>
  std::vector<T> to_host(const Tensor& t) const {
    std::vector<T> v(static_cast<size_t>(t.nbytes() / sizeof(T)));
    download(t, v.data());
    return v;
  }
  // Backend copy of a host tensor that stays valid as long as the returned tensor (weights):
  // on host backends the same bytes (no copy).
  Tensor mirror(const Tensor& host) const;
  void release_cache();
  // Bytes of the tensors from alloc/upload alive now, and the most since the last reset_peak
  // (bucket sizes; mirrored weights not counted).
  size_t live_bytes() const;
  size_t peak_bytes() const;
  void reset_peak();

 private:
  struct Cache;
  const ops::OpTable* ops_;
  std::shared_ptr<Cache> cache_;
};

}  // namespace dsa
