// Facts about the GGUF encoding shared by the reader and the writer: which
// value type numbers exist, how many bytes a scalar takes, and the minimum
// encoded size of each record (used to bound counts before allocating).
#pragma once

#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"
#include "runtime/gguf/gguf.h"

namespace tandem::gguf::format {

// String concatenation for messages. Debian's abseil is built with its own
// absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW 0), so absl::StrCat does
// not accept std::string_view; this accepts both.
inline void append(std::string& out, std::string_view s) { out.append(s); }
inline void append(std::string& out, absl::string_view s) { out.append(s.data(), s.size()); }
inline void append(std::string& out, const std::string& s) { out.append(s); }
inline void append(std::string& out, const char* s) { out.append(s); }
inline void append(std::string& out, char c) { out.push_back(c); }
template <std::integral T>
void append(std::string& out, T v) {
  out.append(std::to_string(v));
}
template <typename... Args>
std::string cat(const Args&... args) {
  std::string out;
  (append(out, args), ...);
  return out;
}

inline constexpr uint32_t kMaxValueType = 12;  // kFloat64
// Arrays of arrays are legal; this bounds recursion on hostile input.
inline constexpr int kMaxArrayDepth = 4;

// magic u32, version u32, n_tensors u64, n_kv u64
inline constexpr uint64_t kHeaderBytes = 24;
// key length u64 + value type u32 + the smallest value (1 byte)
inline constexpr uint64_t kMinKeyValueBytes = 8 + 4 + 1;
// name length u64 + n_dims u32 + one dim u64 + type u32 + offset u64
inline constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;

inline bool valid_value_type(uint32_t t) { return t <= kMaxValueType; }

// Encoded bytes of one scalar; 0 for string and array.
inline uint64_t scalar_size(ValueType t) {
  switch (t) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kBool:
      return 1;
    case ValueType::kUint16:
    case ValueType::kInt16:
      return 2;
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kFloat32:
      return 4;
    case ValueType::kUint64:
    case ValueType::kInt64:
    case ValueType::kFloat64:
      return 8;
    case ValueType::kString:
    case ValueType::kArray:
      return 0;
  }
  return 0;
}

// The fewest bytes one array element of type t can take.
inline uint64_t min_element_size(ValueType t) {
  if (t == ValueType::kString) return 8;     // length
  if (t == ValueType::kArray) return 4 + 8;  // elem type + count
  return scalar_size(t);
}

// "u32", or "type(N)" for a number that names no value type.
inline std::string value_type_label(uint32_t t) {
  if (valid_value_type(t)) return std::string(value_type_name(static_cast<ValueType>(t)));
  return "type(" + std::to_string(t) + ")";
}

// Validates a tensor's shape and type and computes its byte size without
// overflow. Returns "" and sets *n_bytes, or a phrase that completes
// "tensor 'name' ..." (for example "has unknown type 42").
std::string check_tensor_shape(std::span<const int64_t> dims, uint32_t type, uint64_t* n_bytes);

inline uint64_t align_up(uint64_t x, uint64_t alignment) {
  return (x + alignment - 1) / alignment * alignment;
}

inline bool is_power_of_two(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

}  // namespace tandem::gguf::format
