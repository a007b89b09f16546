#include "runtime/testing/random.h"

#include <cmath>

#include "gtest/gtest.h"

namespace tandem::testing {
namespace {

// Reference values computed independently (Python, arbitrary-precision
// integers and IEEE doubles): any platform or compiler that disagrees would
// generate different test models.
TEST(Random, MatchesSplitMix64AndFnv1a) {
  // SplitMix64's published sequence for the seed 1234567.
  EXPECT_EQ(random_bits(1234567, 0), 6457827717110365317ull);
  EXPECT_EQ(random_bits(1234567, 1), 3203168211198807973ull);
  EXPECT_EQ(random_bits(1234567, 2), 9817491932198370423ull);
  EXPECT_EQ(hash_name(""), 0xCBF29CE484222325ull);
  EXPECT_EQ(hash_name("a"), 0xAF63DC4C8601EC8Cull);
  EXPECT_EQ(stream_key(1, "token_embd.weight"), 0xBFC8636E01A25E42ull);
}

TEST(Random, PinnedWeights) {
  const uint64_t k = stream_key(1, "token_embd.weight");
  EXPECT_EQ(normal(k, 0, 0.0, 0.02), 0.0020123037975281477f);
  EXPECT_EQ(normal(k, 1, 0.0, 0.02), 0.0034378841519355774f);
  EXPECT_EQ(normal(k, 2, 0.0, 0.02), -0.004934293683618307f);
  EXPECT_EQ(normal(k, 3, 0.0, 0.02), 0.00881248526275158f);
  const uint64_t n = stream_key(1, "blk.0.attn_norm.weight");
  EXPECT_EQ(normal(n, 0, 1.0, 0.1), 0.9910326600074768f);
  EXPECT_EQ(normal(n, 1, 1.0, 0.1), 0.9143462777137756f);
}

TEST(Random, StandardNormalMoments) {
  const int n = 1 << 20;
  double s = 0, s2 = 0, s4 = 0, lo = 0, hi = 0;
  for (int i = 0; i < n; ++i) {
    const double z = standard_normal(42, static_cast<uint64_t>(i));
    s += z;
    s2 += z * z;
    s4 += z * z * z * z;
    lo = std::min(lo, z);
    hi = std::max(hi, z);
  }
  EXPECT_NEAR(s / n, 0.0, 5.0 / std::sqrt(n));
  EXPECT_NEAR(s2 / n, 1.0, 0.01);
  // Irwin-Hall(4) has kurtosis 2.7 (a Gaussian's is 3).
  EXPECT_NEAR(s4 / n, 2.7, 0.05);
  EXPECT_GE(lo, -3.47);
  EXPECT_LE(hi, 3.47);
  EXPECT_LT(lo, -3.0);
  EXPECT_GT(hi, 3.0);
}

}  // namespace
}  // namespace tandem::testing
