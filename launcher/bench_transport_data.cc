#include "launcher/bench_transport_data.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/kernels/cpu/convert.h"

namespace tandem::launcher {
namespace {

namespace tr = tandem::transport;

constexpr uint64_t kSeed = 0x7a6e64656dULL;

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The element's bits (f32 bits, or f16/bf16 in the low 16).
uint32_t element_bits(tr::DataType type, int rank, uint64_t i) {
  const uint64_t h = mix(kSeed ^ (static_cast<uint64_t>(rank) << 48) ^ i);
  const float v = static_cast<float>(static_cast<int64_t>(h >> 40) - (1 << 23)) / (1 << 23);
  switch (type) {
    case tr::DataType::kF16:
      return kernels::f32_to_fp16(v);
    case tr::DataType::kBF16:
      return kernels::f32_to_bf16(v);
    default: {
      uint32_t b;
      std::memcpy(&b, &v, 4);
      return b;
    }
  }
}

double bits_value(tr::DataType type, uint32_t bits) {
  switch (type) {
    case tr::DataType::kF16:
      return kernels::fp16_to_f32(static_cast<uint16_t>(bits));
    case tr::DataType::kBF16:
      return kernels::bf16_to_f32(static_cast<uint16_t>(bits));
    default: {
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
  }
}

uint32_t load_bits(const std::byte* p, size_t elt) {
  uint32_t b = 0;
  if (elt == 4) {
    std::memcpy(&b, p, 4);
  } else {
    uint16_t h;
    std::memcpy(&h, p, 2);
    b = h;
  }
  return b;
}

}  // namespace

void fill(std::byte* out, uint64_t count, tr::DataType type, int rank) {
  const size_t elt = tr::dtype_size(type);
  for (uint64_t i = 0; i < count; ++i) {
    const uint32_t b = element_bits(type, rank, i);
    if (elt == 4) {
      std::memcpy(out + i * 4, &b, 4);
    } else {
      const uint16_t h = static_cast<uint16_t>(b);
      std::memcpy(out + i * 2, &h, 2);
    }
  }
}

// Elements of `got` that differ from rank `src`'s seeded data, bit for bit.
uint64_t count_mismatches(const std::byte* got, uint64_t count, tr::DataType type, int src) {
  const size_t elt = tr::dtype_size(type);
  uint64_t wrong = 0;
  for (uint64_t i = 0; i < count; ++i) {
    wrong += load_bits(got + i * elt, elt) != element_bits(type, src, i);
  }
  return wrong;
}

// all_reduce: the sum computed exactly (in double, from the same rounded
// inputs), within the dtype's rounding: the transport adds f16/bf16 in f32
// and rounds after every addition, so each of the n-1 additions may be off
// by half an ulp of a partial sum, bounded by the sum of magnitudes.
uint64_t count_wrong_sums(const std::byte* got, uint64_t count, tr::DataType type, int n) {
  const size_t elt = tr::dtype_size(type);
  const double unit_roundoff = type == tr::DataType::kF32   ? 0x1p-24
                               : type == tr::DataType::kF16 ? 0x1p-11
                                                            : 0x1p-8;
  uint64_t wrong = 0;
  for (uint64_t i = 0; i < count; ++i) {
    double sum = 0, magnitude = 0;
    for (int r = 0; r < n; ++r) {
      const double v = bits_value(type, element_bits(type, r, i));
      sum += v;
      magnitude += std::fabs(v);
    }
    const double tol = 2 * unit_roundoff * std::max(1, n - 1) * magnitude + 1e-7;
    const double v = bits_value(type, load_bits(got + i * elt, elt));
    wrong += !(std::fabs(v - sum) <= tol);  // NaN counts as wrong
  }
  return wrong;
}

}  // namespace tandem::launcher
