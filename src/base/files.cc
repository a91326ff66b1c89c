// Regular-file checks and bounded reads for user-supplied paths.
#include "base/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/error.h"

namespace dsa {

int open_regular_file(const std::string& path, uint64_t* size) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
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
    DSA_FAIL("{}: not a regular file (a FIFO, device, socket or directory cannot be read as one)", path);
  }
  // Regular files ignore O_NONBLOCK; clear it anyway so reads behave as usual.
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl >= 0) ::fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  *size = uint64_t(st.st_size);
  return fd;
}

std::string read_text_file(const std::string& path, uint64_t max_bytes, const char* what) {
  uint64_t size = 0;
  const int fd = open_regular_file(path, &size);
  if (size > max_bytes) {
    ::close(fd);
    DSA_FAIL("{}: {} of {} bytes is larger than the {} bytes accepted", path, what, size, max_bytes);
  }
  std::string out(size_t(size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t r = ::read(fd, out.data() + got, out.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int err = errno;
      ::close(fd);
      DSA_FAIL("{}: read failed: {}", path, std::strerror(err));
    }
    if (r == 0) break;  // the file shrank while reading: keep what is there
    got += size_t(r);
  }
  ::close(fd);
  out.resize(got);
  return out;
}

}  // namespace dsa
