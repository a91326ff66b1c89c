// Shared test helpers: the tiny model made once per build, fixtures, comparison metrics.
#pragma once
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/model.h"
#include "model/params.h"

namespace dsa::test {

// Seeded random inputs for op tests.
struct Rng {
  std::mt19937 g;
  explicit Rng(uint32_t seed) : g(seed) {}
  float normal(float sd = 1.0f) { return std::normal_distribution<float>(0.0f, sd)(g); }
  int uni(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(g); }
  std::vector<bf16> bf16s(size_t n, float sd = 1.0f) {
    std::vector<bf16> v(n);
    for (auto& x : v) x = f32_to_bf16(normal(sd));
    return v;
  }
  std::vector<float> floats(size_t n, float sd = 1.0f) {
    std::vector<float> v(n);
    for (auto& x : v) x = normal(sd);
    return v;
  }
  std::vector<fp8> fp8s(size_t n) {  // any finite code (no 0x7f / 0xff NaN)
    std::vector<fp8> v(n);
    for (auto& x : v) {
      do x = fp8(uni(0, 255));
      while ((x & 0x7f) == 0x7f);
    }
    return v;
  }
  std::vector<float> pow2s(size_t n, int lo, int hi) {
    std::vector<float> v(n);
    for (auto& x : v) x = std::ldexp(1.0f, uni(lo, hi));
    return v;
  }
};


// Directory of the `tiny` preset checkpoint, generated on first use under the build tree.
std::string tiny_model_dir();
std::string micro_model_dir();  // the `micro` preset (training tests)
std::string fixture_path(const std::string& rel);  // DSA_SOURCE_DIR/tests/fixtures/rel

// The micro preset as a trainee: model, fp32 masters loaded from the checkpoint, forward weights set.
struct Trainee {
  ModelConfig cfg;
  std::unique_ptr<Model> model;
  std::unique_ptr<Params> params;
  explicit Trainee(const ops::OpTable& ops, bool mtp = true);
};

// Cosine difference 1 - 2<x,y>/(|x|^2+|y|^2) (DeepGEMM's metric), in double.
double cos_diff(const float* x, const float* y, size_t n);
double max_abs_diff(const float* x, const float* y, size_t n);
double max_abs(const float* x, size_t n);

std::vector<float> to_f32(const Tensor& t);      // F32/BF16/I32 tensor → floats
std::vector<int32_t> to_i32(const Tensor& t);    // I32 tensor
std::string sha256_file(const std::string& path); // lowercase hex

}  // namespace dsa::test
