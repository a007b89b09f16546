// Value constructors, type names and TensorInfo arithmetic.
#include <optional>
#include <string>
#include <utility>

#include "runtime/gguf/format.h"
#include "runtime/gguf/gguf.h"

namespace tandem::gguf {
namespace {

template <typename T>
Value make(ValueType type, T v) {
  Value out;
  out.type = type;
  out.data = std::move(v);
  return out;
}

}  // namespace

std::string_view value_type_name(ValueType type) {
  switch (type) {
    case ValueType::kUint8:
      return "u8";
    case ValueType::kInt8:
      return "i8";
    case ValueType::kUint16:
      return "u16";
    case ValueType::kInt16:
      return "i16";
    case ValueType::kUint32:
      return "u32";
    case ValueType::kInt32:
      return "i32";
    case ValueType::kFloat32:
      return "f32";
    case ValueType::kBool:
      return "bool";
    case ValueType::kString:
      return "string";
    case ValueType::kArray:
      return "array";
    case ValueType::kUint64:
      return "u64";
    case ValueType::kInt64:
      return "i64";
    case ValueType::kFloat64:
      return "f64";
  }
  return "unknown";
}

Value Value::u8(uint8_t v) { return make(ValueType::kUint8, v); }
Value Value::i8(int8_t v) { return make(ValueType::kInt8, v); }
Value Value::u16(uint16_t v) { return make(ValueType::kUint16, v); }
Value Value::i16(int16_t v) { return make(ValueType::kInt16, v); }
Value Value::u32(uint32_t v) { return make(ValueType::kUint32, v); }
Value Value::i32(int32_t v) { return make(ValueType::kInt32, v); }
Value Value::f32(float v) { return make(ValueType::kFloat32, v); }
Value Value::boolean(bool v) { return make(ValueType::kBool, v); }
Value Value::str(std::string v) { return make(ValueType::kString, std::move(v)); }
Value Value::u64(uint64_t v) { return make(ValueType::kUint64, v); }
Value Value::i64(int64_t v) { return make(ValueType::kInt64, v); }
Value Value::f64(double v) { return make(ValueType::kFloat64, v); }

Value Value::array(ValueType elem_type, Array elems) {
  Value out = make(ValueType::kArray, std::move(elems));
  out.elem_type = elem_type;
  return out;
}

Value Value::string_array(const std::vector<std::string>& v) {
  Array elems;
  elems.reserve(v.size());
  for (const std::string& s : v) elems.push_back(str(s));
  return array(ValueType::kString, std::move(elems));
}

Value Value::f32_array(const std::vector<float>& v) {
  Array elems;
  elems.reserve(v.size());
  for (float x : v) elems.push_back(f32(x));
  return array(ValueType::kFloat32, std::move(elems));
}

Value Value::i32_array(const std::vector<int32_t>& v) {
  Array elems;
  elems.reserve(v.size());
  for (int32_t x : v) elems.push_back(i32(x));
  return array(ValueType::kInt32, std::move(elems));
}

// The reader guarantees these products fit in int64; the writer checks them.
int64_t TensorInfo::n_elements() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

int64_t TensorInfo::n_rows() const {
  int64_t n = 1;
  for (size_t i = 1; i < dims.size(); ++i) n *= dims[i];
  return n;
}

}  // namespace tandem::gguf

namespace tandem::gguf::format {

std::string check_tensor_shape(std::span<const int64_t> dims, uint32_t type, uint64_t* n_bytes) {
  if (dims.empty() || dims.size() > static_cast<size_t>(kMaxDims)) {
    return "has n_dims " + std::to_string(dims.size()) + " (must be 1.." +
           std::to_string(kMaxDims) + ")";
  }
  std::optional<DTypeInfo> info = dtype_info(type);
  if (!info) return "has unknown type " + std::to_string(type);
  int64_t n_elements = 1;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] < 0) {
      return "has negative dimension " + std::to_string(i) + " (" + std::to_string(dims[i]) + ")";
    }
    if (__builtin_mul_overflow(n_elements, dims[i], &n_elements)) {
      return "has too many elements (the product of its dimensions overflows)";
    }
  }
  if (dims[0] % info->block_size != 0) {
    return "row length " + std::to_string(dims[0]) + " is not a multiple of the " +
           std::string(info->name) + " block size " + std::to_string(info->block_size);
  }
  uint64_t bytes = static_cast<uint64_t>(dims[0] / info->block_size);
  if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(info->block_bytes), &bytes)) {
    return "has too many bytes (overflow)";
  }
  for (size_t i = 1; i < dims.size(); ++i) {
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(dims[i]), &bytes)) {
      return "has too many bytes (overflow)";
    }
  }
  *n_bytes = bytes;
  return "";
}

}  // namespace tandem::gguf::format
