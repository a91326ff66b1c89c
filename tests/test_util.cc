// Shared test helpers.
#include "test_util.h"

#include <cmath>
#include <filesystem>
#include <mutex>

#include "model/make_model.h"

namespace dsa::test {

std::string tiny_model_dir() {
  static std::once_flag once;
  static std::string dir = std::string(DSA_BINARY_DIR) + "/test_models/tiny";
  std::call_once(once, [] {
    // Regenerate every time the test binary starts: cheap (a few MB) and never stale.
    MakeModelOptions o;
    o.preset = "tiny";
    o.out_dir = dir;
    make_model(o);
  });
  return dir;
}

std::string fixture_path(const std::string& rel) { return std::string(DSA_SOURCE_DIR) + "/tests/fixtures/" + rel; }

double cos_diff(const float* x, const float* y, size_t n) {
  double xy = 0, xx = 0, yy = 0;
  for (size_t i = 0; i < n; ++i) {
    xy += double(x[i]) * y[i];
    xx += double(x[i]) * x[i];
    yy += double(y[i]) * y[i];
  }
  if (xx + yy == 0) return 0;
  return 1.0 - 2.0 * xy / (xx + yy);
}

double max_abs_diff(const float* x, const float* y, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(double(x[i]) - y[i]));
  return m;
}

double max_abs(const float* x, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(double(x[i])));
  return m;
}

std::vector<float> to_f32(const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    switch (t.dtype) {
      case DType::F32: v[i] = t.ptr<float>()[i]; break;
      case DType::BF16: v[i] = bf16_to_f32(t.ptr<bf16>()[i]); break;
      case DType::I32: v[i] = float(t.ptr<int32_t>()[i]); break;
      default: DSA_FAIL("to_f32: unsupported dtype {}", dtype_name(t.dtype));
    }
  }
  return v;
}

std::vector<int32_t> to_i32(const Tensor& t) {
  DSA_CHECK(t.dtype == DType::I32, "to_i32: dtype {}", dtype_name(t.dtype));
  return std::vector<int32_t>(t.ptr<int32_t>(), t.ptr<int32_t>() + t.numel());
}

}  // namespace dsa::test
