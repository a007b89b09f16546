// Lookups, typed metadata getters and ranged tensor reads of a parsed File.
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>

#include "common/status.h"
#include "runtime/gguf/byte_source.h"
#include "runtime/gguf/file_fd.h"
#include "runtime/gguf/format.h"
#include "runtime/gguf/gguf.h"

namespace tandem::gguf {

namespace {

std::string type_label(const Value& v) {
  if (v.type == ValueType::kArray) {
    return format::cat("array of ", value_type_name(v.elem_type));
  }
  return std::string(value_type_name(v.type));
}

// The value as an integer of type T when it is an integer that fits.
template <typename T>
std::optional<T> integer_as(const Value& v) {
  return std::visit(
      [](const auto& x) -> std::optional<T> {
        using X = std::decay_t<decltype(x)>;
        if constexpr (std::is_integral_v<X> && !std::is_same_v<X, bool>) {
          if (std::in_range<T>(x)) return static_cast<T>(x);
        }
        return std::nullopt;
      },
      v.data);
}

bool is_integer_type(ValueType t) {
  switch (t) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kUint16:
    case ValueType::kInt16:
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kUint64:
    case ValueType::kInt64:
      return true;
    default:
      return false;
  }
}

// f32 as is; f64 when it is representable as a finite float (or is itself inf/nan).
std::optional<float> float_of(const Value& v) {
  if (const float* f = std::get_if<float>(&v.data)) return *f;
  if (const double* d = std::get_if<double>(&v.data)) {
    if (std::isfinite(*d) && std::fabs(*d) > std::numeric_limits<float>::max()) return std::nullopt;
    return static_cast<float>(*d);
  }
  return std::nullopt;
}

}  // namespace

const Value* File::find(std::string_view key) const {
  for (const KeyValue& kv : metadata_) {
    if (kv.key == key) return &kv.value;
  }
  return nullptr;
}

const TensorInfo* File::find_tensor(std::string_view name) const {
  for (const TensorInfo& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

absl::StatusOr<const Value*> File::lookup(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) return absl::NotFoundError(format::cat(path_, ": key '", key, "' not found"));
  return v;
}

absl::Status File::value_error(std::string_view key, const Value& value,
                               std::string_view expected) const {
  return absl::InvalidArgumentError(format::cat(path_, ": key '", key, "' has type ",
                                                type_label(value), ", expected ", expected));
}

template <typename T>
static absl::StatusOr<T> get_integer(const File& file, const Value& v, std::string_view key,
                                     std::string_view expected) {
  if (!is_integer_type(v.type)) {
    return absl::InvalidArgumentError(format::cat(file.path(), ": key '", key, "' has type ",
                                                  type_label(v), ", expected ", expected));
  }
  std::optional<T> out = integer_as<T>(v);
  if (!out) {
    return absl::InvalidArgumentError(format::cat(file.path(), ": key '", key, "' (", type_label(v),
                                                  ") is out of range for ", expected));
  }
  return *out;
}

absl::StatusOr<uint32_t> File::get_u32(std::string_view key) const {
  TANDEM_ASSIGN_OR_RETURN(const Value* v, lookup(key));
  return get_integer<uint32_t>(*this, *v, key, "u32");
}

absl::StatusOr<uint64_t> File::get_u64(std::string_view key) const {
  TANDEM_ASSIGN_OR_RETURN(const Value* v, lookup(key));
  return get_integer<uint64_t>(*this, *v, key, "u64");
}

absl::StatusOr<int64_t> File::get_i64(std::string_view key) const {
  TANDEM_ASSIGN_OR_RETURN(const Value* v, lookup(key));
  return get_integer<int64_t>(*this, *v, key, "i64");
}

absl::StatusOr<float> File::get_f32(std::string_view key) const {
  TANDEM_ASSIGN_OR_RETURN(const Value* v, lookup(key));
  if (v->type != ValueType::kFloat32 && v->type != ValueType::kFloat64) {
    return value_error(key, *v, "f32 or f64");
  }
  std::optional<float> f = float_of(*v);
  if (!f) {
    return absl::InvalidArgumentError(
        format::cat(path_, ": key '", key, "' (f64) is out of range for f32"));
  }
  return *f;
}

absl::StatusOr<bool> File::get_bool(std::string_view key) const {
  TANDEM_ASSIGN_OR_RETURN(const Value* v, lookup(key));
  if (v->type != ValueType::kBool) return value_error(key, *v, "bool");
  return std::get<bool>(v->data);
}

absl::StatusOr<std::string> File::get_string(std::string_view key) const {
  TANDEM_ASSIGN_OR_RETURN(const Value* v, lookup(key));
  if (v->type != ValueType::kString) return value_error(key, *v, "string");
  return std::get<std::string>(v->data);
}

absl::StatusOr<std::vector<std::string>> File::get_string_array(std::string_view key) const {
  TANDEM_ASSIGN_OR_RETURN(const Value* v, lookup(key));
  if (v->type != ValueType::kArray || v->elem_type != ValueType::kString) {
    return value_error(key, *v, "array of string");
  }
  const auto& elems = std::get<Value::Array>(v->data);
  std::vector<std::string> out;
  out.reserve(elems.size());
  for (const Value& e : elems) out.push_back(std::get<std::string>(e.data));
  return out;
}

absl::StatusOr<std::vector<float>> File::get_f32_array(std::string_view key) const {
  TANDEM_ASSIGN_OR_RETURN(const Value* v, lookup(key));
  if (v->type != ValueType::kArray ||
      (v->elem_type != ValueType::kFloat32 && v->elem_type != ValueType::kFloat64)) {
    return value_error(key, *v, "array of f32 or f64");
  }
  const auto& elems = std::get<Value::Array>(v->data);
  std::vector<float> out;
  out.reserve(elems.size());
  for (size_t i = 0; i < elems.size(); ++i) {
    std::optional<float> f = float_of(elems[i]);
    if (!f) {
      return absl::InvalidArgumentError(
          format::cat(path_, ": key '", key, "' element ", i, " is out of range for f32"));
    }
    out.push_back(*f);
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> File::get_i32_array(std::string_view key) const {
  TANDEM_ASSIGN_OR_RETURN(const Value* v, lookup(key));
  if (v->type != ValueType::kArray || !is_integer_type(v->elem_type)) {
    return value_error(key, *v, "array of integers");
  }
  const auto& elems = std::get<Value::Array>(v->data);
  std::vector<int32_t> out;
  out.reserve(elems.size());
  for (size_t i = 0; i < elems.size(); ++i) {
    std::optional<int32_t> x = integer_as<int32_t>(elems[i]);
    if (!x) {
      return absl::InvalidArgumentError(
          format::cat(path_, ": key '", key, "' element ", i, " is out of range for i32"));
    }
    out.push_back(*x);
  }
  return out;
}

absl::Status File::read_tensor(const TensorInfo& tensor, void* dst) const {
  return read_tensor_range(tensor, 0, tensor.n_bytes, dst);
}

absl::Status File::read_tensor_range(const TensorInfo& tensor, uint64_t offset, uint64_t size,
                                     void* dst) const {
  uint64_t end = 0;
  if (__builtin_add_overflow(offset, size, &end) || end > tensor.n_bytes) {
    return absl::OutOfRangeError(format::cat(path_, ": range [", offset, ", +", size,
                                             ") is outside tensor '", tensor.name, "' (",
                                             tensor.n_bytes, " bytes)"));
  }
  if (size == 0) return absl::OkStatus();
  uint64_t at = tensor.file_offset + offset;  // cannot overflow: the parser checked the end
  if (at > file_size_ || size > file_size_ - at) {
    return absl::OutOfRangeError(format::cat(path_, ": tensor '", tensor.name, "' bytes [", at,
                                             ", ", at + size, ") are not in the file (", file_size_,
                                             " bytes; opened without data?)"));
  }
  return read_bytes(at, size, dst);
}

absl::Status File::read_tensor_rows(const TensorInfo& tensor, uint64_t offset, uint64_t row_bytes,
                                    uint64_t stride, uint64_t n_rows, void* dst) const {
  if (n_rows == 0 || row_bytes == 0) return absl::OkStatus();
  uint64_t last = 0, end = 0;
  if (row_bytes > stride && n_rows > 1) {
    return absl::InvalidArgumentError(format::cat(path_, ": rows of ", row_bytes,
                                                  " bytes overlap at a stride of ", stride));
  }
  if (__builtin_mul_overflow(stride, n_rows - 1, &last) ||
      __builtin_add_overflow(offset, last, &last) ||
      __builtin_add_overflow(last, row_bytes, &end) || end > tensor.n_bytes) {
    return absl::OutOfRangeError(format::cat(path_, ": ", n_rows, " rows of ", row_bytes,
                                             " bytes from ", offset, " are outside tensor '",
                                             tensor.name, "' (", tensor.n_bytes, " bytes)"));
  }
  if (remote_) {
    return remote_->read_rows(tensor.file_offset + offset, row_bytes, stride, n_rows, dst);
  }
  auto* out = static_cast<uint8_t*>(dst);
  for (uint64_t r = 0; r < n_rows; ++r) {
    TANDEM_RETURN_IF_ERROR(read_tensor_range(tensor, offset + r * stride, row_bytes,
                                             out + r * row_bytes));
  }
  return absl::OkStatus();
}

absl::Status File::read_bytes(uint64_t at, uint64_t size, void* dst) const {
  if (at > file_size_ || size > file_size_ - at) {
    return absl::OutOfRangeError(format::cat(path_, ": bytes [", at, ", +", size,
                                             ") are past its end (", file_size_, " bytes)"));
  }
  if (size == 0) return absl::OkStatus();
  if (image_) {
    std::memcpy(dst, image_->data() + at, static_cast<size_t>(size));
    return absl::OkStatus();
  }
  if (remote_) return remote_->read_rows(at, size, size, 1, dst);
  if (!fd_) {
    return absl::FailedPreconditionError(format::cat(path_, ": file is not open"));
  }
  return pread_exact(fd_->fd, dst, size, at, path_);
}

}  // namespace tandem::gguf
