// Grow-only aligned scratch buffers for the CPU kernels (one per calling thread, kept between calls).
#pragma once
#include <cstddef>

#include "hwy/aligned_allocator.h"

namespace dsa::ops::cpu {

// Grow-only aligned scratch of the calling thread.
template <class T>
struct Buf {
  hwy::AlignedFreeUniquePtr<T[]> p;
  size_t cap = 0;
  T* get(size_t n) {
    if (n > cap) {
      p = hwy::AllocateAligned<T>(n);
      cap = n;
    }
    return p.get();
  }
};

}  // namespace dsa::ops::cpu
