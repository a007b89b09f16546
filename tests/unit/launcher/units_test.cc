#include "launcher/units.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace tandem::launcher {
namespace {

using ::testing::HasSubstr;

TEST(Units, Bytes) {
  EXPECT_EQ(*parse_bytes("--m", "128GiB"), int64_t{128} << 30);
  EXPECT_EQ(*parse_bytes("--m", "128 GiB"), int64_t{128} << 30);
  EXPECT_EQ(*parse_bytes("--m", "1.5KiB"), 1536);
  EXPECT_EQ(*parse_bytes("--m", "128GB"), int64_t{128000000000});
  EXPECT_EQ(*parse_bytes("--m", "0B"), 0);
  EXPECT_EQ(*parse_bytes("--m", "3TiB"), int64_t{3} << 40);
  auto none = parse_bytes("--node-memory", "128");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(none.status().message()),
              HasSubstr("--node-memory: '128' needs a unit (B, KB, MB, GB, TB, KiB"));
  EXPECT_THAT(std::string(parse_bytes("--m", "12Gb").status().message()),
              HasSubstr("unknown unit 'Gb' in '12Gb'"));
  EXPECT_THAT(std::string(parse_bytes("--m", "lots").status().message()),
              HasSubstr("'lots' is not a number"));
  EXPECT_THAT(std::string(parse_bytes("--m", "-1GiB").status().message()),
              HasSubstr("must be zero or more"));
  EXPECT_THAT(std::string(parse_bytes("--m", "1e30B").status().message()), HasSubstr("too large"));
}

TEST(Units, Bandwidth) {
  EXPECT_DOUBLE_EQ(*parse_bandwidth("--b", "273GB/s"), 273e9);
  EXPECT_DOUBLE_EQ(*parse_bandwidth("--b", "200Gb/s"), 25e9);
  EXPECT_DOUBLE_EQ(*parse_bandwidth("--b", "1GiB/s"), 1073741824.0);
  EXPECT_DOUBLE_EQ(*parse_bandwidth("--b", "100Mb/s"), 12.5e6);
  EXPECT_FALSE(parse_bandwidth("--b", "0GB/s").ok());
  EXPECT_FALSE(parse_bandwidth("--b", "inf GB/s").ok());
  EXPECT_THAT(std::string(parse_bandwidth("--link", "200G").status().message()),
              HasSubstr("--link: unknown unit 'G'"));
}

TEST(Units, DurationAndFlops) {
  EXPECT_DOUBLE_EQ(*parse_duration("--l", "30us"), 30e-6);
  EXPECT_DOUBLE_EQ(*parse_duration("--l", "1.5ms"), 1.5e-3);
  EXPECT_DOUBLE_EQ(*parse_duration("--l", "2s"), 2.0);
  EXPECT_DOUBLE_EQ(*parse_duration("--l", "0us"), 0.0);
  EXPECT_FALSE(parse_duration("--l", "30").ok());
  EXPECT_FALSE(parse_duration("--l", "30 min").ok());
  EXPECT_DOUBLE_EQ(*parse_flops("--c", "31TFLOP/s"), 31e12);
  EXPECT_DOUBLE_EQ(*parse_flops("--c", "1PFLOPS"), 1e15);
  EXPECT_FALSE(parse_flops("--c", "0TFLOP/s").ok());
}

}  // namespace
}  // namespace tandem::launcher
