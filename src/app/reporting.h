// The CLI commands' error reporting: run f; a dsa::Error (any std::exception) becomes
// "dsa WHAT: error: ..." on stderr and exit status 1 (CLI11's RuntimeError passes through).
#pragma once
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <string>

namespace dsa::app {

template <class F>
void reporting(const std::string& what, F&& f) {
  try {
    f();
  } catch (const CLI::RuntimeError&) {
    throw;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsa %s: error: %s\n", what.c_str(), e.what());
    throw CLI::RuntimeError(1);
  }
}

}  // namespace dsa::app
