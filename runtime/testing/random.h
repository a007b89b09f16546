// Deterministic pseudo-random numbers for generated test data. Every value is
// a pure function of (key, index), computed with integer arithmetic and one
// correctly rounded scaling, so the same seed yields bit-identical weights on
// every compiler, libm and CPU, and tensors can be filled in any order.
#pragma once

#include <cstdint>
#include <string_view>

namespace tandem::testing {

// SplitMix64's finalizer: a bijective, well-mixed hash of 64 bits.
constexpr uint64_t mix64(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// FNV-1a, to derive a per-tensor key from its name.
constexpr uint64_t hash_name(std::string_view s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (char c : s) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001B3ull;
  }
  return h;
}

// The key of stream `name` under `seed`.
constexpr uint64_t stream_key(uint64_t seed, std::string_view name) {
  return mix64(mix64(seed + 0x9E3779B97F4A7C15ull) ^ hash_name(name));
}

// The index-th 64-bit word of stream `key` (SplitMix64 in counter form).
constexpr uint64_t random_bits(uint64_t key, uint64_t index) {
  return mix64(key + (index + 1) * 0x9E3779B97F4A7C15ull);
}

// An approximately standard normal value: the Irwin-Hall sum of the four
// 16-bit quarters of one random word, centred and scaled to variance 1. It has
// exactly mean 0 and variance 1, tails cut at +-3.46 sigma, and needs no
// log/sin/cos, whose last bits differ between math libraries.
inline double standard_normal(uint64_t key, uint64_t index) {
  const uint64_t r = random_bits(key, index);
  const int64_t sum =
      static_cast<int64_t>((r & 0xFFFF) + ((r >> 16) & 0xFFFF) + ((r >> 32) & 0xFFFF) + (r >> 48));
  // Each quarter is uniform on [0, 65535]: mean 65535/2, variance (65536^2 - 1) / 12.
  constexpr int64_t kMean2 = 2 * 65535;
  constexpr double kInvStd = 2.6428997921303014e-05;  // 1 / sqrt((65536^2 - 1) / 3)
  return static_cast<double>(sum - kMean2) * kInvStd;
}

// mean + stddev * standard_normal, rounded once to float. Kept as separate
// statements so no compiler fuses them into an FMA (which would change bits).
inline float normal(uint64_t key, uint64_t index, double mean, double stddev) {
  const double scaled = standard_normal(key, index) * stddev;
  const double shifted = scaled + mean;
  return static_cast<float>(shifted);
}

}  // namespace tandem::testing
