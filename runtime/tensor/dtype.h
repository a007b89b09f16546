// Tensor element types with the numbering and block layouts of GGUF/ggml.
// Every type the format defines is described here so that a file can be
// validated and sized even when no kernel supports its type.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tandem {

enum class DType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
};

struct DTypeInfo {
  std::string_view name;  // as llama.cpp prints it: "f32", "q8_0", ...
  int64_t block_size;     // elements per block
  size_t block_bytes;     // bytes per block
};

// The layout of `type`, or nullopt when the number names no ggml type.
std::optional<DTypeInfo> dtype_info(uint32_t type);
inline std::optional<DTypeInfo> dtype_info(DType type) {
  return dtype_info(static_cast<uint32_t>(type));
}

// Name of a type ("q4_0"); "type(N)" for a number that names none.
std::string dtype_name(uint32_t type);
inline std::string dtype_name(DType type) { return dtype_name(static_cast<uint32_t>(type)); }

// Parses "f32", "q8_0", ... (case-insensitive).
std::optional<DType> dtype_from_name(std::string_view name);

// Bytes of a row of `n_elements` (must be a multiple of the block size).
size_t row_bytes(DType type, int64_t n_elements);

// Block structs of the GGUF spec for the types the kernels support.
inline constexpr int64_t kQK8_0 = 32;
inline constexpr int64_t kQK4_0 = 32;

struct BlockQ8_0 {
  uint16_t d;  // fp16 scale
  int8_t qs[kQK8_0];
};
static_assert(sizeof(BlockQ8_0) == 34);

struct BlockQ4_0 {
  uint16_t d;               // fp16 scale
  uint8_t qs[kQK4_0 / 2];  // low nibbles hold elements 0..15, high nibbles 16..31
};
static_assert(sizeof(BlockQ4_0) == 18);

// x = d * q + m with q in [0, 15].
struct BlockQ4_1 {
  uint16_t d;          // fp16 scale
  uint16_t m;          // fp16 minimum
  uint8_t qs[32 / 2];  // nibbles as in BlockQ4_0
};
static_assert(sizeof(BlockQ4_1) == 20);

// x = d * (q - 16), q = nibble | (bit << 4) in [0, 31].
struct BlockQ5_0 {
  uint16_t d;          // fp16 scale
  uint8_t qh[4];       // bit j (little-endian uint32) is the fifth bit of element j
  uint8_t qs[32 / 2];  // nibbles as in BlockQ4_0
};
static_assert(sizeof(BlockQ5_0) == 22);

// K-quants: super-blocks of 256 elements with sub-block scales.
inline constexpr int64_t kQK_K = 256;

// 8 sub-blocks of 32: x = d * sc[s] * q - dmin * m[s], q in [0, 15]. The
// 6-bit sc/m of sub-block s are packed into `scales`: for s < 4, sc is the
// low 6 bits of scales[s] and m those of scales[s + 4]; for s >= 4, the low
// 4 bits come from the nibbles of scales[s + 4] (sc low, m high) and the top
// 2 bits from the top bits of scales[s - 4] (sc) and scales[s] (m). Byte l of
// the 32-byte chunk c of qs holds element 64c + l in its low nibble (sub-block
// 2c) and element 64c + 32 + l in its high nibble (sub-block 2c + 1).
struct BlockQ4_K {
  uint16_t d;     // fp16 scale of the sub-block scales
  uint16_t dmin;  // fp16 scale of the sub-block minima
  uint8_t scales[12];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ4_K) == 144);

// As BlockQ4_K with q in [0, 31]: bit 2c of qh[l] is the fifth bit of element
// 64c + l, bit 2c + 1 that of element 64c + 32 + l.
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ5_K) == 176);

// 16 sub-blocks of 16: x = d * scales[s] * (q - 32), q in [0, 63]. In each
// half h (128 elements), element 128h + 32k + l (k < 4, l < 32) has its low
// 4 bits in ql[64h + l + 32 * (k & 1)] (low nibble for k < 2, high for
// k >= 2) and its top 2 bits at bit 2k of qh[32h + l].
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;  // fp16 scale of the scales
};
static_assert(sizeof(BlockQ6_K) == 210);

// Activations for K-quant products (never stored in files): x = d * q, with
// the sums of each 16 q for the minima / offsets of the weights.
struct BlockQ8_K {
  float d;
  int8_t qs[kQK_K];
  int16_t bsums[kQK_K / 16];
};
static_assert(sizeof(BlockQ8_K) == 292);

}  // namespace tandem
