// Backend registry: op tables by name ("ref" = scalar reference; others as they are built).
#pragma once
#include <string>
#include <vector>

#include "ops/ops.h"

namespace dsa::ops {

std::vector<std::string> backend_names();
const OpTable& backend_by_name(const std::string& name);  // throws dsa::Error for unknown names
const OpTable& default_backend();                         // the fastest available CPU backend

}  // namespace dsa::ops
