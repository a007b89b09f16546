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

}  // namespace tandem
