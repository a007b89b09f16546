// GGUF v3 writer. Everything is validated before the first byte is written so
// that a file the writer produces always opens with the reader; files are
// written to a temporary name and renamed, so a failed write leaves no
// half-written model behind.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <type_traits>
#include <utility>
#include <variant>

#include "absl/container/flat_hash_set.h"
#include "common/status.h"
#include "runtime/gguf/format.h"
#include "runtime/gguf/gguf.h"

namespace tandem::gguf {

namespace detail {

// Where emit() puts bytes: memory, or a file descriptor behind a buffer.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual absl::Status write(const void* data, size_t n) = 0;
  uint64_t pos() const { return pos_; }

  template <typename T>
  absl::Status pod(T v) {
    return write(&v, sizeof(T));
  }
  absl::Status str(std::string_view s) {
    TANDEM_RETURN_IF_ERROR(pod<uint64_t>(s.size()));
    return write(s.data(), s.size());
  }
  absl::Status zeros(uint64_t n) {
    static constexpr uint8_t kZeros[256] = {};
    while (n > 0) {
      size_t k = static_cast<size_t>(std::min<uint64_t>(n, sizeof(kZeros)));
      TANDEM_RETURN_IF_ERROR(write(kZeros, k));
      n -= k;
    }
    return absl::OkStatus();
  }

 protected:
  uint64_t pos_ = 0;
};

}  // namespace detail

namespace {

using detail::Sink;

class MemorySink final : public Sink {
 public:
  explicit MemorySink(std::vector<uint8_t>* out) : out_(out) {}
  absl::Status write(const void* data, size_t n) override {
    const auto* p = static_cast<const uint8_t*>(data);
    out_->insert(out_->end(), p, p + n);
    pos_ += n;
    return absl::OkStatus();
  }

 private:
  std::vector<uint8_t>* out_;
};

class FdSink final : public Sink {
 public:
  FdSink(int fd, std::string path) : fd_(fd), path_(std::move(path)) { buffer_.reserve(kBuffer); }

  absl::Status write(const void* data, size_t n) override {
    const auto* p = static_cast<const uint8_t*>(data);
    pos_ += n;
    if (buffer_.size() + n <= kBuffer) {
      buffer_.insert(buffer_.end(), p, p + n);
      return absl::OkStatus();
    }
    TANDEM_RETURN_IF_ERROR(flush());
    if (n >= kBuffer) return write_all(p, n);  // tensor data goes straight through
    buffer_.insert(buffer_.end(), p, p + n);
    return absl::OkStatus();
  }

  absl::Status flush() {
    absl::Status st = write_all(buffer_.data(), buffer_.size());
    buffer_.clear();
    return st;
  }

 private:
  static constexpr size_t kBuffer = size_t{1} << 20;

  absl::Status write_all(const uint8_t* p, size_t n) {
    while (n > 0) {
      ssize_t done = ::write(fd_, p, std::min<size_t>(n, size_t{1} << 30));
      if (done < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        return absl::ErrnoToStatus(err, format::cat(path_, ": write failed"));
      }
      p += done;
      n -= static_cast<size_t>(done);
    }
    return absl::OkStatus();
  }

  int fd_;
  std::string path_;
  std::vector<uint8_t> buffer_;
};

using Data = decltype(Value::data);
static_assert(std::is_same_v<std::variant_alternative_t<9, Data>, uint64_t> &&
              std::is_same_v<std::variant_alternative_t<12, Data>, Value::Array>);

// Index of the alternative of Value::data that holds a value of type t.
size_t variant_index(ValueType t) {
  switch (t) {
    case ValueType::kUint8:
      return 0;
    case ValueType::kInt8:
      return 1;
    case ValueType::kUint16:
      return 2;
    case ValueType::kInt16:
      return 3;
    case ValueType::kUint32:
      return 4;
    case ValueType::kInt32:
      return 5;
    case ValueType::kFloat32:
      return 6;
    case ValueType::kBool:
      return 7;
    case ValueType::kString:
      return 8;
    case ValueType::kUint64:
      return 9;
    case ValueType::kInt64:
      return 10;
    case ValueType::kFloat64:
      return 11;
    case ValueType::kArray:
      return 12;
  }
  return std::variant_npos;
}

// Checks that a Value's stored alternative matches its declared type, down
// through nested arrays, so that what is written is what the reader returns.
absl::Status check_value(const Value& v, int depth, std::string_view key) {
  if (!format::valid_value_type(static_cast<uint32_t>(v.type)) ||
      v.data.index() != variant_index(v.type)) {
    return absl::InvalidArgumentError(format::cat(
        "key '", key, "': value declared as ",
        format::value_type_label(static_cast<uint32_t>(v.type)), " holds different data"));
  }
  if (v.type != ValueType::kArray) return absl::OkStatus();
  if (depth >= format::kMaxArrayDepth) {
    return absl::InvalidArgumentError(format::cat("key '", key, "': arrays nested deeper than ",
                                                  format::kMaxArrayDepth, " levels"));
  }
  for (const Value& e : std::get<Value::Array>(v.data)) {
    if (e.type != v.elem_type) {
      return absl::InvalidArgumentError(
          format::cat("key '", key, "': array of ", value_type_name(v.elem_type),
                      " holds an element of type ", value_type_name(e.type)));
    }
    TANDEM_RETURN_IF_ERROR(check_value(e, depth + 1, key));
  }
  return absl::OkStatus();
}

// The value's bytes after its type tag (elem type, count and elements for arrays).
absl::Status write_payload(Sink& sink, const Value& v) {
  return std::visit(
      [&](const auto& x) -> absl::Status {
        using X = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<X, std::string>) {
          return sink.str(x);
        } else if constexpr (std::is_same_v<X, Value::Array>) {
          TANDEM_RETURN_IF_ERROR(sink.pod<uint32_t>(static_cast<uint32_t>(v.elem_type)));
          TANDEM_RETURN_IF_ERROR(sink.pod<uint64_t>(x.size()));
          for (const Value& e : x) TANDEM_RETURN_IF_ERROR(write_payload(sink, e));
          return absl::OkStatus();
        } else if constexpr (std::is_same_v<X, bool>) {
          return sink.pod<uint8_t>(x ? 1 : 0);
        } else {
          return sink.pod<X>(x);
        }
      },
      v.data);
}

}  // namespace

void Writer::set(std::string key, Value value) {
  for (KeyValue& kv : metadata_) {
    if (kv.key == key) {
      kv.value = std::move(value);
      return;
    }
  }
  metadata_.push_back(KeyValue{std::move(key), std::move(value)});
}

void Writer::set_alignment(uint32_t alignment) {
  // An invalid alignment is reported by write(), like every other bad input.
  alignment_ = alignment;
  set("general.alignment", Value::u32(alignment));
}

void Writer::add_tensor(std::string name, std::vector<int64_t> dims, DType type, Fill fill) {
  tensors_.push_back(PendingTensor{std::move(name), std::move(dims), type, std::move(fill)});
}

void Writer::add_tensor(std::string name, std::vector<int64_t> dims, DType type,
                        std::span<const uint8_t> data) {
  // Copied so that the caller's buffer need not outlive the Writer.
  auto copy = std::make_shared<const std::vector<uint8_t>>(data.begin(), data.end());
  Fill fill = [copy](std::span<uint8_t> dst) {
    size_t n = std::min(dst.size(), copy->size());
    if (n != 0) std::memcpy(dst.data(), copy->data(), n);  // data() may be null when empty
  };
  tensors_.push_back(PendingTensor{std::move(name), std::move(dims), type, std::move(fill),
                                   static_cast<int64_t>(data.size())});
}

absl::Status Writer::emit(Sink& sink, bool header_only) const {
  // Validate everything first.
  uint64_t alignment = alignment_;
  for (const KeyValue& kv : metadata_) {
    TANDEM_RETURN_IF_ERROR(check_value(kv.value, 0, kv.key));
    if (kv.key == "general.alignment") {
      if (kv.value.type != ValueType::kUint32) {
        return absl::InvalidArgumentError(format::cat(
            "general.alignment has type ", value_type_name(kv.value.type), ", expected u32"));
      }
      alignment = std::get<uint32_t>(kv.value.data);
    }
  }
  if (!format::is_power_of_two(alignment)) {
    return absl::InvalidArgumentError(
        format::cat("alignment ", alignment, " is not a non-zero power of two"));
  }
  std::vector<uint64_t> n_bytes(tensors_.size());
  std::vector<uint64_t> offsets(tensors_.size());
  uint64_t data_size = 0;
  absl::flat_hash_set<std::string_view> names;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const PendingTensor& t = tensors_[i];
    if (!names.insert(t.name).second) {
      return absl::InvalidArgumentError(format::cat("duplicate tensor name '", t.name, "'"));
    }
    std::string bad =
        format::check_tensor_shape(t.dims, static_cast<uint32_t>(t.type), &n_bytes[i]);
    if (!bad.empty()) return absl::InvalidArgumentError(format::cat("tensor '", t.name, "' ", bad));
    if (t.given_bytes >= 0 && static_cast<uint64_t>(t.given_bytes) != n_bytes[i]) {
      return absl::InvalidArgumentError(format::cat("tensor '", t.name, "' has ", t.given_bytes,
                                                    " bytes of data but its shape needs ",
                                                    n_bytes[i]));
    }
    if (!t.fill && !header_only)
      return absl::InvalidArgumentError(format::cat("tensor '", t.name, "' has no data"));
    offsets[i] = format::align_up(data_size, alignment);
    data_size = offsets[i] + n_bytes[i];
  }

  TANDEM_RETURN_IF_ERROR(sink.pod<uint32_t>(kMagic));
  TANDEM_RETURN_IF_ERROR(sink.pod<uint32_t>(3));
  TANDEM_RETURN_IF_ERROR(sink.pod<uint64_t>(tensors_.size()));
  TANDEM_RETURN_IF_ERROR(sink.pod<uint64_t>(metadata_.size()));
  for (const KeyValue& kv : metadata_) {
    TANDEM_RETURN_IF_ERROR(sink.str(kv.key));
    TANDEM_RETURN_IF_ERROR(sink.pod<uint32_t>(static_cast<uint32_t>(kv.value.type)));
    TANDEM_RETURN_IF_ERROR(write_payload(sink, kv.value));
  }
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const PendingTensor& t = tensors_[i];
    TANDEM_RETURN_IF_ERROR(sink.str(t.name));
    TANDEM_RETURN_IF_ERROR(sink.pod<uint32_t>(static_cast<uint32_t>(t.dims.size())));
    for (int64_t d : t.dims) TANDEM_RETURN_IF_ERROR(sink.pod<uint64_t>(static_cast<uint64_t>(d)));
    TANDEM_RETURN_IF_ERROR(sink.pod<uint32_t>(static_cast<uint32_t>(t.type)));
    TANDEM_RETURN_IF_ERROR(sink.pod<uint64_t>(offsets[i]));
  }
  const uint64_t data_offset = format::align_up(sink.pos(), alignment);
  TANDEM_RETURN_IF_ERROR(sink.zeros(data_offset - sink.pos()));
  if (header_only) return absl::OkStatus();

  uint64_t largest = 0;
  for (uint64_t n : n_bytes) largest = std::max(largest, n);
  std::vector<uint8_t> buffer(static_cast<size_t>(largest));
  for (size_t i = 0; i < tensors_.size(); ++i) {
    TANDEM_RETURN_IF_ERROR(sink.zeros(data_offset + offsets[i] - sink.pos()));
    std::span<uint8_t> dst(buffer.data(), static_cast<size_t>(n_bytes[i]));
    std::fill(dst.begin(), dst.end(), uint8_t{0});  // a Fill that skips bytes writes zeros
    tensors_[i].fill(dst);
    TANDEM_RETURN_IF_ERROR(sink.write(dst.data(), dst.size()));
  }
  // Pad the last tensor too, as llama.cpp does, so the file size is aligned.
  return sink.zeros(format::align_up(sink.pos(), alignment) - sink.pos());
}

absl::StatusOr<std::vector<uint8_t>> Writer::write_to_memory() const {
  std::vector<uint8_t> out;
  MemorySink sink(&out);
  absl::Status st = emit(sink);
  if (!st.ok()) return absl::Status(st.code(), format::cat("<memory>: ", st.message()));
  return out;
}

absl::Status Writer::write(const std::string& path) const { return write_file(path, false); }

absl::Status Writer::write_header_only(const std::string& path) const {
  return write_file(path, true);
}

absl::Status Writer::write_file(const std::string& path, bool header_only) const {
  std::string tmp = path + ".tmp-XXXXXX";
  int fd = ::mkstemp(tmp.data());
  if (fd < 0) {
    int err = errno;
    return absl::ErrnoToStatus(err, format::cat(path, ": cannot create temporary file ", tmp));
  }
  FdSink sink(fd, path);
  absl::Status st = emit(sink, header_only);
  if (!st.ok() && st.message().rfind(path, 0) != 0) {
    st = absl::Status(st.code(), format::cat(path, ": ", st.message()));
  }
  if (st.ok()) st = sink.flush();
  // mkstemp makes the file 0600; a model file is meant to be shared.
  if (st.ok() && ::fchmod(fd, 0644) != 0) {
    int err = errno;
    st = absl::ErrnoToStatus(err, format::cat(path, ": chmod failed"));
  }
  if (st.ok() && ::fsync(fd) != 0) {
    int err = errno;
    st = absl::ErrnoToStatus(err, format::cat(path, ": fsync failed"));
  }
  if (::close(fd) != 0 && st.ok()) {
    int err = errno;
    st = absl::ErrnoToStatus(err, format::cat(path, ": close failed"));
  }
  if (st.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    st = absl::ErrnoToStatus(err, format::cat(path, ": cannot rename ", tmp, " into place"));
  }
  if (!st.ok()) ::unlink(tmp.c_str());
  return st;
}

}  // namespace tandem::gguf
