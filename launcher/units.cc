#include "launcher/units.h"

#include <charconv>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace tandem::launcher {
namespace {

struct Unit {
  std::string name;
  double scale;
};

// "<number><unit>" with optional spaces between; the number must be finite
// and positive (zero is allowed only where `allow_zero`).
absl::StatusOr<double> parse(std::string_view flag, std::string_view text,
                             const std::vector<Unit>& units, const char* wants, bool allow_zero) {
  const std::string f(flag), t(text);
  double value = 0;
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  auto [next, ec] = std::from_chars(begin, end, value);
  if (ec != std::errc() || next == begin) {
    return absl::InvalidArgumentError(
        absl::StrCat(f, ": '", t, "' is not a number with a unit (", wants, ")"));
  }
  while (next != end && *next == ' ') ++next;
  const std::string_view unit(next, static_cast<size_t>(end - next));
  if (unit.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(f, ": '", t, "' needs a unit (", wants, ")"));
  }
  for (const Unit& u : units) {
    if (unit != u.name) continue;
    const double scaled = value * u.scale;
    if (!std::isfinite(scaled) || scaled < 0 || (scaled == 0 && !allow_zero)) {
      return absl::InvalidArgumentError(absl::StrCat(
          f, ": '", t, "' must be ", allow_zero ? "zero or more" : "more than zero"));
    }
    return scaled;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(f, ": unknown unit '", std::string(unit), "' in '", t, "' (", wants, ")"));
}

// B, KB, ..., TB, KiB, ..., TiB with `unit` for B and `suffix` after it.
std::vector<Unit> size_units(const std::string& unit, double scale, const std::string& suffix) {
  std::vector<Unit> out;
  for (const auto& [prefix, factor] : std::vector<std::pair<std::string, double>>{
           {"", 1.0}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"Ki", 1024.0},
           {"Mi", 1048576.0}, {"Gi", 1073741824.0}, {"Ti", 1099511627776.0}}) {
    out.push_back({prefix + unit + suffix, factor * scale});
  }
  return out;
}

}  // namespace

absl::StatusOr<int64_t> parse_bytes(std::string_view flag, std::string_view text) {
  static const std::vector<Unit> units = size_units("B", 1.0, "");
  auto v = parse(flag, text, units, "B, KB, MB, GB, TB, KiB, MiB, GiB or TiB", true);
  if (!v.ok()) return v.status();
  if (*v >= 9.2e18) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(flag), ": '", std::string(text), "' is too large"));
  }
  return static_cast<int64_t>(std::llround(*v));
}

absl::StatusOr<double> parse_bandwidth(std::string_view flag, std::string_view text) {
  static const std::vector<Unit> units = [] {
    std::vector<Unit> u = size_units("B", 1.0, "/s");
    for (const Unit& bits : size_units("b", 1.0 / 8, "/s")) u.push_back(bits);
    return u;
  }();
  return parse(flag, text, units, "GB/s, GiB/s, Gb/s, MB/s, ... (B = byte, b = bit)", false);
}

absl::StatusOr<double> parse_duration(std::string_view flag, std::string_view text) {
  static const std::vector<Unit> units = {{"ns", 1e-9}, {"us", 1e-6}, {"ms", 1e-3}, {"s", 1.0}};
  return parse(flag, text, units, "ns, us, ms or s", true);
}

absl::StatusOr<double> parse_flops(std::string_view flag, std::string_view text) {
  static const std::vector<Unit> units = {
      {"FLOP/s", 1.0},   {"FLOPS", 1.0},    {"GFLOP/s", 1e9},  {"GFLOPS", 1e9},
      {"TFLOP/s", 1e12}, {"TFLOPS", 1e12},  {"PFLOP/s", 1e15}, {"PFLOPS", 1e15}};
  return parse(flag, text, units, "GFLOP/s, TFLOP/s or PFLOP/s", false);
}

}  // namespace tandem::launcher
