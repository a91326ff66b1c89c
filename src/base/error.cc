// Error reporting helpers.
#include "base/error.h"

#include <cstring>

namespace dsa {

void throw_error(const char* file, int line, const std::string& msg) {
  const char* base = std::strrchr(file, '/');
  throw Error(fmt::format("{}:{}: {}", base ? base + 1 : file, line, msg));
}

}  // namespace dsa
