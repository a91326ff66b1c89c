// Read-only memory mapping of a whole file (RAII); every system call is checked and a failure is
// a dsa::Error naming the file and the OS error.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace dsa {

class MmapFile {
 public:
  MmapFile() = default;
  // Maps `path` read-only. An empty file gives size() == 0 and data() == nullptr.
  static MmapFile open(const std::string& path);
  ~MmapFile();

  MmapFile(MmapFile&& o) noexcept;
  MmapFile& operator=(MmapFile&& o) noexcept;
  MmapFile(const MmapFile&) = delete;
  MmapFile& operator=(const MmapFile&) = delete;

  const uint8_t* data() const { return static_cast<const uint8_t*>(addr_); }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  bool is_open() const { return !path_.empty(); }

 private:
  void reset() noexcept;
  void* addr_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

}  // namespace dsa
