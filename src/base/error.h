// Error type and checks: every failure carries file:line and a readable message.
#pragma once
#include <stdexcept>
#include <string>
#include <fmt/format.h>

namespace dsa {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void throw_error(const char* file, int line, const std::string& msg);

}  // namespace dsa

// DSA_CHECK(cond, "fmt {}", args...) throws dsa::Error("file:line: message") when cond is false.
#define DSA_CHECK(cond, ...)                                              \
  do {                                                                    \
    if (!(cond)) ::dsa::throw_error(__FILE__, __LINE__, fmt::format(__VA_ARGS__)); \
  } while (0)
#define DSA_FAIL(...) ::dsa::throw_error(__FILE__, __LINE__, fmt::format(__VA_ARGS__))
