// Shared test helpers.
#include "test_util.h"

#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <mutex>
#include <unistd.h>

#include "model/make_model.h"

namespace dsa::test {

namespace {

// A preset generated once per process into a directory of its own (ctest runs test processes in
// parallel), removed at exit: cheap (tiny: 13 MB, ~0.2 s) and never stale.
std::string preset_dir(const char* preset, std::once_flag& once, std::string& dir) {
  std::call_once(once, [&] {
    dir = std::string(DSA_BINARY_DIR) + "/test_models/" + preset + "-" + std::to_string(::getpid());
    MakeModelOptions o;
    o.preset = preset;
    o.out_dir = dir;
    make_model(o);
    static std::vector<std::string> made;
    made.push_back(dir);
    if (made.size() == 1)
      std::atexit([] {
        std::error_code ec;
        for (auto& d : made) std::filesystem::remove_all(d, ec);
      });
  });
  return dir;
}

}  // namespace

std::string tiny_model_dir() {
  static std::once_flag once;
  static std::string dir;
  return preset_dir("tiny", once, dir);
}

std::string micro_model_dir() {
  static std::once_flag once;
  static std::string dir;
  return preset_dir("micro", once, dir);
}

Trainee::Trainee(const ops::OpTable& ops, bool mtp) {
  const std::string dir = micro_model_dir();
  cfg = ModelConfig::load(dir + "/config.json");
  model = Model::create(cfg, ops);
  params = std::make_unique<Params>(model->backend(), cfg, mtp);
  params->load(Checkpoint::open(dir));
  model->set_weights(params->forward_weights());
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

namespace {
// SHA-256 (FIPS 180-4), only to recognise stale fixtures.
struct Sha256 {
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void block(const uint8_t* p) {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
        0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
        0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
        0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
        0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
        0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
        0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) w[i] = uint32_t(p[4 * i]) << 24 | uint32_t(p[4 * i + 1]) << 16 | uint32_t(p[4 * i + 2]) << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
  }
};
}  // namespace

std::string sha256_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  DSA_CHECK(f.good(), "cannot open {}", path);
  std::string data((std::istreambuf_iterator<char>(f)), {});
  Sha256 s;
  const uint64_t bits = uint64_t(data.size()) * 8;
  data.push_back(char(0x80));
  while (data.size() % 64 != 56) data.push_back(0);
  for (int i = 7; i >= 0; --i) data.push_back(char(bits >> (8 * i)));
  for (size_t i = 0; i < data.size(); i += 64) s.block(reinterpret_cast<const uint8_t*>(data.data()) + i);
  std::string hex;
  for (uint32_t v : s.h) hex += fmt::format("{:08x}", v);
  return hex;
}

}  // namespace dsa::test
