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

// The sums below are written for the auto-vectorizer (this file is built with
// -O3): __restrict pointers, no branches in the loop bodies, and conversions
// done with integer and float operations that have vector forms. On x86-64
// they are also cloned for AVX2 and picked at load time. Large all_reduces
// spend their time here as much as on the wire, so this is a hot path.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define TANDEM_REDUCE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define TANDEM_REDUCE_CLONES
#endif

// All ones where `cond` holds: selections as bit masks, which GCC keeps
// branch-free (with ?: it may branch around the float operations, which
// stops the vectorizer).
inline uint32_t mask_if(bool cond) { return 0u - static_cast<uint32_t>(cond); }
inline uint32_t select(uint32_t mask, uint32_t if_set, uint32_t if_clear) {
  return (if_set & mask) | (if_clear & ~mask);
}

// Branch-free f16 -> f32 (F. Giesen's half_to_float_fast), bit-identical to
// f16_to_f32 for every input, NaN payloads included.
inline float f16_to_f32_vec(uint16_t h) {
  const uint32_t shifted = static_cast<uint32_t>(h & 0x7fffu) << 13;  // exponent and mantissa
  const uint32_t exp = shifted & 0x0f800000u;
  const uint32_t normal = shifted + ((127u - 15u) << 23);
  const uint32_t inf_nan = normal + ((128u - 16u) << 23);
  // Subnormal: let the FPU normalize it: (mantissa as float) * 2^-24 exactly.
  const float sub = std::bit_cast<float>(normal + (1u << 23)) - std::bit_cast<float>(113u << 23);
  uint32_t bits = select(mask_if(exp == 0x0f800000u), inf_nan, normal);
  bits = select(mask_if(exp == 0), std::bit_cast<uint32_t>(sub), bits);
  return std::bit_cast<float>(bits | (static_cast<uint32_t>(h & 0x8000u) << 16));
}

// Branch-free f32 -> f16, round to nearest even, bit-identical to f32_to_f16
// (F. Giesen's float_to_half_fast3_rtne, with f32_to_f16's NaN payloads).
inline uint16_t f32_to_f16_vec(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t abs = bits & 0x7fffffffu;
  // Normal: rebias, add the rounding bias (0xfff plus the lowest kept bit),
  // and let a carry into the exponent happen (up to infinity).
  const uint32_t normal = (abs - 0x38000000u + 0xfffu + ((abs >> 13) & 1u)) >> 13;
  // Subnormal: adding 0.5 (2^-1) aligns the mantissa's kept bits at the bottom
  // and rounds to nearest even in the FPU's default mode.
  const float magic = std::bit_cast<float>(126u << 23);
  const uint32_t sub = std::bit_cast<uint32_t>(std::bit_cast<float>(abs) + magic) - (126u << 23);
  uint32_t out = select(mask_if(abs < 0x38800000u), sub, normal);
  out = select(mask_if(abs >= 0x477ff000u), 0x7c00u, out);
  out = select(mask_if(abs > 0x7f800000u), 0x7e00u | ((abs >> 13) & 0x3ffu), out);
  return static_cast<uint16_t>(sign | out);
}

inline float bf16_to_f32_vec(uint16_t h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

inline uint16_t f32_to_bf16_vec(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t nan = (bits >> 16) | 0x40u;
  return static_cast<uint16_t>((bits & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

// memcpy loads and stores keep the loops free of alignment assumptions (a
// caller's buffer may start anywhere); the compiler turns them into plain,
// unaligned vector moves.
template <typename T>
inline T load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
template <typename T>
inline void store(std::byte* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}

TANDEM_REDUCE_CLONES
void sum_f32(std::byte* __restrict a, const std::byte* __restrict b, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    store<float>(a + 4 * i, load<float>(a + 4 * i) + load<float>(b + 4 * i));
  }
}

TANDEM_REDUCE_CLONES
void sum_i32(std::byte* __restrict a, const std::byte* __restrict b, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    store<uint32_t>(a + 4 * i, load<uint32_t>(a + 4 * i) + load<uint32_t>(b + 4 * i));
  }
}

TANDEM_REDUCE_CLONES
void sum_f16(std::byte* __restrict a, const std::byte* __restrict b, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const float s =
        f16_to_f32_vec(load<uint16_t>(a + 2 * i)) + f16_to_f32_vec(load<uint16_t>(b + 2 * i));
    store<uint16_t>(a + 2 * i, f32_to_f16_vec(s));
  }
}

TANDEM_REDUCE_CLONES
void sum_bf16(std::byte* __restrict a, const std::byte* __restrict b, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const float s =
        bf16_to_f32_vec(load<uint16_t>(a + 2 * i)) + bf16_to_f32_vec(load<uint16_t>(b + 2 * i));
    store<uint16_t>(a + 2 * i, f32_to_bf16_vec(s));
  }
}

}  // namespace

void reduce_sum(void* inout, const void* in, size_t count, DataType type) {
  // The collectives never sum a buffer into itself.
  auto* a = static_cast<std::byte*>(inout);
  const auto* b = static_cast<const std::byte*>(in);
  switch (type) {
    case DataType::kF32:
      sum_f32(a, b, count);
      return;
    case DataType::kF16:
      sum_f16(a, b, count);
      return;
    case DataType::kBF16:
      sum_bf16(a, b, count);
      return;
    case DataType::kI32:
      sum_i32(a, b, count);
      return;
    case DataType::kU8:
      break;
  }
  TANDEM_CHECK(false && "reduce_sum: type is not reducible (checked by the caller)");
}

}  // namespace tandem::transport
