// Backend registry: op tables by name ("ref" = scalar reference, "cpu" = SIMD; "cuda" registers
// itself when the binary is built with the CUDA backend).
#pragma once
#include <string>
#include <vector>

#include "ops/ops.h"

namespace dsa::ops {

std::vector<std::string> backend_names();
const OpTable& backend_by_name(const std::string& name);  // throws dsa::Error for unknown names
const OpTable& default_backend();                         // the fastest available CPU backend
// The table a command-line flag names: "" = default_backend(), else backend_by_name(name).
const OpTable& select_backend(const std::string& name);
void register_backend(const std::string& name, const OpTable& table);

}  // namespace dsa::ops
