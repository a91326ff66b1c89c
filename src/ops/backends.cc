// Backend registry.
#include "ops/backends.h"

#include <map>
#include <mutex>

#include "base/error.h"

namespace dsa::ops {

namespace {
std::mutex g_mu;
std::map<std::string, const OpTable*>& extra() {
  static std::map<std::string, const OpTable*> m;
  return m;
}
}  // namespace

void register_backend(const std::string& name, const OpTable& table) {
  std::lock_guard<std::mutex> lock(g_mu);
  extra()[name] = &table;
}

std::vector<std::string> backend_names() {
  std::vector<std::string> n = {"ref", "cpu"};
  std::lock_guard<std::mutex> lock(g_mu);
  for (auto& [k, v] : extra()) n.push_back(k);
  return n;
}

const OpTable& backend_by_name(const std::string& name) {
  if (name == "ref") return ref_ops();
  if (name == "cpu") return cpu_ops();
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = extra().find(name);
    if (it != extra().end()) return *it->second;
  }
  std::string all;
  for (auto& n : backend_names()) all += (all.empty() ? "" : ", ") + n;
  DSA_FAIL("unknown backend \"{}\" (available: {})", name, all);
}

const OpTable& default_backend() { return cpu_ops(); }

const OpTable& select_backend(const std::string& name) { return name.empty() ? default_backend() : backend_by_name(name); }

}  // namespace dsa::ops
