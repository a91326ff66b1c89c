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

namespace dsa {

MmapFile MmapFile::open(const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  DSA_CHECK(fd >= 0, "{}: cannot open for reading: {}", path, std::strerror(errno));

  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    DSA_FAIL("{}: fstat failed: {}", path, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    DSA_FAIL("{}: not a regular file", path);
  }

  MmapFile m;
  m.path_ = path;
  m.size_ = size_t(st.st_size);
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
