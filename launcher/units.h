// Quantities with units on the command line: "128GiB", "273GB/s", "200Gb/s",
// "30us", "31TFLOP/s". A missing or unknown unit is an error that names the
// flag and lists the units it takes, never a silent guess.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

namespace tandem::launcher {

// Bytes: B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (of 1024).
absl::StatusOr<int64_t> parse_bytes(std::string_view flag, std::string_view text);
// Bytes per second: a size unit over s ("273GB/s", "10GiB/s") or bits over s
// ("200Gb/s", "100Mb/s"; b = bit).
absl::StatusOr<double> parse_bandwidth(std::string_view flag, std::string_view text);
// Seconds: ns, us, ms or s.
absl::StatusOr<double> parse_duration(std::string_view flag, std::string_view text);
// Floating-point operations per second: FLOP/s or FLOPS with G, T or P.
absl::StatusOr<double> parse_flops(std::string_view flag, std::string_view text);

}  // namespace tandem::launcher
