// Host tensors: a dtype, a shape (PyTorch order, row-major) and bytes that are either owned
// or borrowed from a mapping kept alive by `owner`.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"

namespace dsa {

enum class DType : uint8_t { F32, BF16, F16, F8_E4M3, I32, I64, U8 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);          // safetensors spelling: "F32", "BF16", "F8_E4M3", ...
bool dtype_from_name(const std::string& name, DType* out);

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);    // "[576, 7168]"
int64_t shape_numel(const Shape& s);

struct Tensor {
  DType dtype = DType::F32;
  Shape shape;
  void* data = nullptr;
  std::shared_ptr<void> owner;  // keeps `data` alive (heap buffer or file mapping)

  int64_t numel() const { return shape_numel(shape); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  int64_t dim(int i) const { return shape.at(i < 0 ? shape.size() + i : i); }
  bool defined() const { return data != nullptr || (numel() == 0 && !shape.empty()); }

  template <class T> T* ptr() { return static_cast<T*>(data); }
  template <class T> const T* ptr() const { return static_cast<const T*>(data); }

  static Tensor empty(DType dtype, Shape shape);   // uninitialised, 64-byte aligned
  static Tensor zeros(DType dtype, Shape shape);
  // Borrow bytes owned by someone else (e.g. a mapping); `owner` keeps them alive.
  static Tensor view(DType dtype, Shape shape, const void* data, std::shared_ptr<void> owner);
};

}  // namespace dsa
