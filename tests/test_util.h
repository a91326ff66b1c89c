// Shared test helpers: the tiny model made once per build, fixtures, comparison metrics.
#pragma once
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/model.h"

namespace dsa::test {

// Directory of the `tiny` preset checkpoint, generated on first use under the build tree.
std::string tiny_model_dir();
std::string fixture_path(const std::string& rel);  // DSA_SOURCE_DIR/tests/fixtures/rel

// Cosine difference 1 - 2<x,y>/(|x|^2+|y|^2) (DeepGEMM's metric), in double.
double cos_diff(const float* x, const float* y, size_t n);
double max_abs_diff(const float* x, const float* y, size_t n);
double max_abs(const float* x, size_t n);

std::vector<float> to_f32(const Tensor& t);      // F32/BF16/I32 tensor → floats
std::vector<int32_t> to_i32(const Tensor& t);    // I32 tensor
std::string sha256_file(const std::string& path); // lowercase hex

}  // namespace dsa::test
