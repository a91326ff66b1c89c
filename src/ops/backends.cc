// Backend registry.
#include "ops/backends.h"

#include "base/error.h"

namespace dsa::ops {

std::vector<std::string> backend_names() { return {"ref"}; }

const OpTable& backend_by_name(const std::string& name) {
  if (name == "ref") return ref_ops();
  DSA_FAIL("unknown backend \"{}\" (available: ref)", name);
}

const OpTable& default_backend() { return ref_ops(); }

}  // namespace dsa::ops
