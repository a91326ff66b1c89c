// Read-only mmap wrapper: open, fstat, mmap, close; munmap on destruction.
#include "base/mmap_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "base/error.h"
#include "base/files.h"

namespace dsa {

MmapFile MmapFile::open(const std::string& path) {
  uint64_t size = 0;
  const int fd = open_regular_file(path, &size);  // never blocks on a FIFO; regular files only

  MmapFile m;
  m.path_ = path;
  m.size_ = size_t(size);
  if (m.size_ > 0) {
    void* p = ::mmap(nullptr, m.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      DSA_FAIL("{}: mmap of {} bytes failed: {}", path, m.size_, std::strerror(err));
    }
    m.addr_ = p;
  }
  // The mapping stays valid after the descriptor is closed.
  if (::close(fd) != 0) DSA_FAIL("{}: close failed: {}", path, std::strerror(errno));
  return m;
}

MmapFile::~MmapFile() { reset(); }

MmapFile::MmapFile(MmapFile&& o) noexcept
    : addr_(std::exchange(o.addr_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      path_(std::move(o.path_)) {
  o.path_.clear();
}

MmapFile& MmapFile::operator=(MmapFile&& o) noexcept {
  if (this != &o) {
    reset();
    addr_ = std::exchange(o.addr_, nullptr);
    size_ = std::exchange(o.size_, 0);
    path_ = std::move(o.path_);
    o.path_.clear();
  }
  return *this;
}

void MmapFile::reset() noexcept {
  // munmap only fails for invalid arguments, which a mapping we created cannot have.
  if (addr_ != nullptr) ::munmap(addr_, size_);
  addr_ = nullptr;
  size_ = 0;
  path_.clear();
}

}  // namespace dsa
