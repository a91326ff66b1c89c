// Tests of base/numeric: bf16 RNE conversion, FP8 e4m3fn encode/decode (vs torch fixtures), ue8m0.
#include "base/numeric.h"
#include "base/portable_math.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

namespace dsa {
namespace {

template <class T>
std::vector<T> load_fixture(const std::string& name, size_t count) {
  const std::string path = std::string(DSA_SOURCE_DIR) + "/tests/fixtures/ops/" + name + ".bin";
  std::vector<T> v(count);
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) {
    ADD_FAILURE() << "missing fixture " << path << " (run tests/reference/gen_op_fixtures.py)";
    return {};
  }
  const size_t got = std::fread(v.data(), sizeof(T), count, f);
  const bool at_end = std::fgetc(f) == EOF;
  std::fclose(f);
  EXPECT_EQ(got, count) << path;
  EXPECT_TRUE(at_end) << path << " is longer than expected";
  return v;
}

TEST(Fp8, EncodeEveryBf16MatchesTorch) {
  // Expected: torch bf16.float().clamp(-448, 448).to(float8_e4m3fn) for all 65536 bit patterns.
  const auto want = load_fixture<uint8_t>("fp8_encode_all_bf16", 65536);
  ASSERT_EQ(want.size(), 65536u);
  int bad = 0;
  for (uint32_t u = 0; u < 65536; ++u) {
    float f = bf16_to_f32(bf16{uint16_t(u)});
    if (f > 448.0f) f = 448.0f;
    if (f < -448.0f) f = -448.0f;
    const fp8 got = f32_to_fp8(f);
    if (got != want[u] && ++bad <= 10)
      ADD_FAILURE() << "bf16 0x" << std::hex << u << " (" << f << "): got 0x" << int(got)
                    << " want 0x" << int(want[u]);
  }
  EXPECT_EQ(bad, 0);
}

TEST(Fp8, DecodeAllCodesMatchesTorch) {
  const auto want = load_fixture<float>("fp8_decode_all", 256);
  ASSERT_EQ(want.size(), 256u);
  for (int c = 0; c < 256; ++c) {
    const float got = fp8_to_f32(uint8_t(c));
    if (std::isnan(want[size_t(c)])) {
      EXPECT_TRUE(std::isnan(got)) << c;
      EXPECT_TRUE(std::isnan(kFp8Table[size_t(c)])) << c;
    } else {
      EXPECT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(want[size_t(c)])) << c;
      EXPECT_EQ(std::bit_cast<uint32_t>(kFp8Table[size_t(c)]), std::bit_cast<uint32_t>(got)) << c;
    }
  }
}

TEST(Fp8, KnownValuesAndRoundTrip) {
  EXPECT_EQ(fp8_to_f32(0x7e), 448.0f);
  EXPECT_EQ(fp8_to_f32(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(fp8_to_f32(0x08), std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(fp8_to_f32(0x7f)) && std::isnan(fp8_to_f32(0xff)));
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;
    EXPECT_EQ(f32_to_fp8(fp8_to_f32(uint8_t(c))), uint8_t(c)) << c;
  }
  EXPECT_EQ(f32_to_fp8(1e9f), 0x7e);  // saturates
  EXPECT_EQ(f32_to_fp8(-1e9f), 0xfe);
  EXPECT_EQ(f32_to_fp8(std::numeric_limits<float>::infinity()), 0x7e);
  EXPECT_EQ(f32_to_fp8(std::nanf("")) & 0x7f, 0x7f);
  EXPECT_EQ(f32_to_fp8(std::ldexp(1.0f, -10)), 0x00);      // tie between 0 and 2^-9 -> even (0)
  EXPECT_EQ(f32_to_fp8(3 * std::ldexp(1.0f, -10)), 0x02);  // tie 1.5 * 2^-9 -> 2 * 2^-9
  EXPECT_EQ(f32_to_fp8(1.0625f), 0x38);                    // tie between 1 and 1.125 -> 1
  EXPECT_EQ(f32_to_fp8(1.1875f), 0x3a);                    // tie between 1.125 and 1.25 -> 1.25
  EXPECT_EQ(f32_to_fp8(-0.0f), 0x80);
}

TEST(Bf16, RoundNearestEvenTiesAndSpecials) {
  const float one = 1.0f, ulp = std::ldexp(1.0f, -7);
  EXPECT_EQ(round_bf16(one + ulp / 2), one);                              // tie -> even (1.0)
  EXPECT_EQ(round_bf16(one + 3 * ulp / 2), one + 2 * ulp);                // tie -> even (1 + 2 ulp)
  EXPECT_EQ(round_bf16(std::nextafter(one + ulp / 2, 2.0f)), one + ulp);  // just above the tie
  EXPECT_EQ(round_bf16(std::nextafter(one + ulp / 2, 0.0f)), one);
  EXPECT_EQ(round_bf16(-(one + ulp / 2)), -one);
  EXPECT_EQ(f32_to_bf16(0.0f).bits, 0x0000);
  EXPECT_EQ(f32_to_bf16(-0.0f).bits, 0x8000);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()).bits, 0x7f80);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()).bits, 0x7f80);  // rounds up to inf
  const float nan_low = std::bit_cast<float>(0x7f800001u);  // NaN with only low payload bits
  const bf16 n = f32_to_bf16(nan_low);
  EXPECT_TRUE(std::isnan(bf16_to_f32(n)));
  EXPECT_NE(n.bits & 0x0040, 0);  // quiet
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(-std::nanf("")))));
  // Subnormal tie: 2^-133 + half a bf16 ulp of the subnormal range rounds to even.
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x00008000u)).bits, 0x0000);
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x00018000u)).bits, 0x0002);
}

TEST(Bf16, EveryPatternRoundTrips) {
  for (uint32_t u = 0; u < 65536; ++u) {
    const float f = bf16_to_f32(bf16{uint16_t(u)});
    const bf16 b = f32_to_bf16(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_f32(b))) << u;
    } else {
      EXPECT_EQ(b.bits, u) << u;
    }
  }
}

TEST(Ue8m0, SmallestPowerOfTwoAtLeastAmaxOver448) {
  for (float amax : {448.0f, 449.0f, 1.0f, 3.0f, 1e-4f, 1e-7f, 0.0f, 65504.0f, 1e30f, 896.0f}) {
    const float s = ue8m0_scale_for_amax(amax);
    const float t = std::fmax(amax, 1e-4f) * (1.0f / 448.0f);
    EXPECT_TRUE(is_power_of_two_float(s)) << amax;
    EXPECT_GE(s, t) << amax;
    EXPECT_LT(s / 2, t) << amax;
  }
  EXPECT_EQ(ue8m0_scale_for_amax(448.0f), 1.0f);
  EXPECT_EQ(ue8m0_scale_for_amax(449.0f), 2.0f);
  EXPECT_EQ(ue8m0_scale_for_amax(0.0f), ue8m0_scale_for_amax(1e-4f));
  EXPECT_FALSE(is_power_of_two_float(3.0f));
  EXPECT_FALSE(is_power_of_two_float(0.0f));
}

// base/portable_math.h: the host/device-identical exp and log are within 2 ulp of libm's.
TEST(PortableMath, ExpAndLogWithinTwoUlpOfLibm) {
  std::mt19937_64 g(3);
  auto ulp_diff = [](double a, double b) {
    if (a == b) return 0.0;
    return std::fabs(a - b) / std::fabs(std::nextafter(b, INFINITY) - b);
  };
  for (int i = 0; i < 200000; ++i) {
    const double x = std::uniform_real_distribution<double>(-740.0, 700.0)(g);
    ASSERT_LE(ulp_diff(dsa::pm::exp(x), std::exp(x)), 2.0) << x;
    const double y = std::exp(std::uniform_real_distribution<double>(-700.0, 700.0)(g));
    ASSERT_LE(ulp_diff(dsa::pm::log(y), std::log(y)), 2.0) << y;
  }
  EXPECT_EQ(dsa::pm::exp(0.0), 1.0);
  EXPECT_EQ(dsa::pm::log(1.0), 0.0);
  EXPECT_EQ(dsa::pm::exp(-INFINITY), 0.0);
  EXPECT_EQ(dsa::pm::log(0.0), -INFINITY);
  const float z[3] = {1.0f, -INFINITY, 3.0f};
  EXPECT_NEAR(dsa::log_sum_exp(z, 3), std::log(std::exp(1.0) + std::exp(3.0)), 1e-15);
}

}  // namespace
}  // namespace dsa
