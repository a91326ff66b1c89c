// Backend registry.
#include "ops/backends.h"

#include "base/error.h"

namespace dsa::ops {

std::vector<std::string> backend_names() { return {"ref", "cpu"}; }

const OpTable& backend_by_name(const std::string& name) {
  if (name == "ref") return ref_ops();
  if (name == "cpu") return cpu_ops();
  DSA_FAIL("unknown backend \"{}\" (available: ref, cpu)", name);
}

const OpTable& default_backend() { return cpu_ops(); }

}  // namespace dsa::ops
