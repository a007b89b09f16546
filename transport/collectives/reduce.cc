#include "transport/collectives/reduce.h"

#include <bit>
#include <cstring>

#include "common/status.h"

namespace tandem::transport {

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf or NaN (payload kept)
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {
    // Subnormal: normalize.
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400u) == 0);
    bits = sign | (static_cast<uint32_t>(112 - e) << 23) | ((mant & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

uint16_t f32_to_f16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (abs < 0x38800000u) {
    // Result is subnormal (or zero): shift the implicit-one mantissa into place
    // and round to nearest even on the bits shifted out.
    if (abs < 0x33000000u) return sign;  // below half the smallest subnormal
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const int shift = 126 - static_cast<int>(abs >> 23);  // 14..24
    const uint32_t half = 1u << (shift - 1);
    const uint32_t rest = mant & ((1u << shift) - 1);
    uint32_t out = mant >> shift;
    if (rest > half || (rest == half && (out & 1u))) ++out;
    return static_cast<uint16_t>(sign | out);
  }
  // Normal: rebias and round the 13 dropped bits; a carry into the exponent is
  // the correct result (up to inf, excluded above).
  uint32_t out = abs - 0x38000000u;
  const uint32_t rest = out & 0x1fffu;
  out >>= 13;
  if (rest > 0x1000u || (rest == 0x1000u && (out & 1u))) ++out;
  return static_cast<uint16_t>(sign | out);
}

float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

uint16_t f32_to_bf16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

bool reducible(DataType type) {
  return type == DataType::kF32 || type == DataType::kF16 || type == DataType::kBF16 ||
         type == DataType::kI32;
}

namespace {

// memcpy-based loads keep this free of alignment and aliasing assumptions
// (chunks of a caller's buffer may start anywhere); compilers fold them.
template <typename T>
T load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
template <typename T>
void store(std::byte* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}

}  // namespace

void reduce_sum(void* inout, const void* in, size_t count, DataType type) {
  auto* a = static_cast<std::byte*>(inout);
  const auto* b = static_cast<const std::byte*>(in);
  switch (type) {
    case DataType::kF32:
      for (size_t i = 0; i < count; ++i) {
        store<float>(a + 4 * i, load<float>(a + 4 * i) + load<float>(b + 4 * i));
      }
      return;
    case DataType::kF16:
      for (size_t i = 0; i < count; ++i) {
        const float s =
            f16_to_f32(load<uint16_t>(a + 2 * i)) + f16_to_f32(load<uint16_t>(b + 2 * i));
        store<uint16_t>(a + 2 * i, f32_to_f16(s));
      }
      return;
    case DataType::kBF16:
      for (size_t i = 0; i < count; ++i) {
        const float s =
            bf16_to_f32(load<uint16_t>(a + 2 * i)) + bf16_to_f32(load<uint16_t>(b + 2 * i));
        store<uint16_t>(a + 2 * i, f32_to_bf16(s));
      }
      return;
    case DataType::kI32:
      for (size_t i = 0; i < count; ++i) {
        store<uint32_t>(a + 4 * i, load<uint32_t>(a + 4 * i) + load<uint32_t>(b + 4 * i));
      }
      return;
    case DataType::kU8:
      break;
  }
  TANDEM_CHECK(false && "reduce_sum: type is not reducible (checked by the caller)");
}

}  // namespace tandem::transport
