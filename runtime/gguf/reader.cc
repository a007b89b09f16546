// Parsing and validation of a GGUF header, metadata and tensor directory.
// Every field is checked before it is used, and every count is bounded by the
// bytes left in the file before anything is allocated for it, so hostile
// input costs at most a small multiple of its own size in memory.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "common/status.h"
#include "runtime/gguf/byte_source.h"
#include "runtime/gguf/file_fd.h"
#include "runtime/gguf/format.h"
#include "runtime/gguf/gguf.h"

namespace tandem::gguf {

// Private access to File's members; lives only for one parse.
class File::Parser {
 public:
  Parser(ByteSource& src, OpenOptions options, File& out)
      : src_(src), options_(options), out_(out) {}

  absl::Status run() {
    TANDEM_RETURN_IF_ERROR(parse_header());
    TANDEM_RETURN_IF_ERROR(parse_metadata());
    TANDEM_RETURN_IF_ERROR(parse_tensor_infos());
    return check_tensor_data();
  }

 private:
  absl::Status error(uint64_t offset, std::string_view what) const {
    return absl::InvalidArgumentError(format::cat(out_.path_, ": ", what, " at offset ", offset));
  }

  // "the value of key 'k'": what is being read, for messages. Built only on
  // error so that reading 400k vocabulary strings allocates nothing extra.
  std::string where(std::string_view what) const {
    if (context_.empty()) return std::string(what);
    return format::cat(what, " of ", context_kind_, " '", context_, "'");
  }

  // Fails unless n more bytes exist; `what` names the field being read.
  absl::Status need(uint64_t n, std::string_view what) const {
    if (src_.remaining() >= n) return absl::OkStatus();
    return error(src_.pos(), format::cat("file truncated: ", where(what), " needs ", n,
                                         " bytes but only ", src_.remaining(), " remain"));
  }

  template <typename T>
  absl::Status read_pod(T* v, std::string_view what) {
    if (src_.remaining() < sizeof(T)) return need(sizeof(T), what);
    return src_.read(v, sizeof(T));
  }

  absl::Status read_string(std::string* s, std::string_view what) {
    uint64_t at = src_.pos();
    uint64_t len = 0;
    TANDEM_RETURN_IF_ERROR(read_pod(&len, what));
    if (len > src_.remaining()) {
      return error(at, format::cat(where(what), ": string length ", len, " exceeds the ",
                                   src_.remaining(), " bytes left in the file"));
    }
    s->resize(static_cast<size_t>(len));
    return src_.read(s->data(), s->size());
  }

  absl::Status parse_header() {
    uint32_t magic = 0;
    TANDEM_RETURN_IF_ERROR(read_pod(&magic, "magic"));
    if (magic != kMagic) {
      char hex[16];
      std::snprintf(hex, sizeof(hex), "0x%08x", magic);
      return error(0, format::cat("bad magic ", hex, " (expected \"GGUF\"): not a GGUF file"));
    }
    TANDEM_RETURN_IF_ERROR(read_pod(&out_.version_, "version"));
    uint32_t v = out_.version_;
    if (v == 1) {
      return error(4, "GGUF version 1 is not supported (only versions 2 and 3)");
    }
    if (v == 0x02000000u || v == 0x03000000u) {
      return error(4, format::cat("GGUF version ", v,
                                  " looks like a big-endian file, which is not supported"));
    }
    if (v != 2 && v != 3) {
      return error(4, format::cat("unsupported GGUF version ", v, " (only versions 2 and 3)"));
    }
    TANDEM_RETURN_IF_ERROR(read_pod(&n_tensors_, "tensor count"));
    TANDEM_RETURN_IF_ERROR(read_pod(&n_kv_, "key/value count"));
    // Each record has a minimum encoded size, so the bytes left bound the counts.
    uint64_t left = src_.remaining();
    if (n_kv_ > left / format::kMinKeyValueBytes) {
      return error(16, format::cat("key/value count ", n_kv_, " is impossible: only ", left,
                                   " bytes follow the header and each needs at least ",
                                   format::kMinKeyValueBytes));
    }
    if (n_tensors_ > left / format::kMinTensorInfoBytes) {
      return error(8, format::cat("tensor count ", n_tensors_, " is impossible: only ", left,
                                  " bytes follow the header and each tensor info needs at least ",
                                  format::kMinTensorInfoBytes));
    }
    if (n_kv_ * format::kMinKeyValueBytes + n_tensors_ * format::kMinTensorInfoBytes > left) {
      return error(
          8, format::cat(n_tensors_, " tensors and ", n_kv_, " key/values cannot fit in the ", left,
                         " bytes after the header"));
    }
    return absl::OkStatus();
  }

  absl::Status parse_metadata() {
    out_.metadata_.reserve(static_cast<size_t>(n_kv_));
    absl::flat_hash_set<std::string> seen;
    seen.reserve(static_cast<size_t>(n_kv_));
    for (uint64_t i = 0; i < n_kv_; ++i) {
      uint64_t key_at = src_.pos();
      KeyValue kv;
      context_ = {};
      TANDEM_RETURN_IF_ERROR(read_string(&kv.key, format::cat("key of key/value ", i)));
      context_kind_ = "key";
      context_ = kv.key;
      if (!seen.insert(kv.key).second) {
        return error(key_at, format::cat("duplicate key '", kv.key, "'"));
      }
      uint64_t type_at = src_.pos();
      uint32_t type = 0;
      TANDEM_RETURN_IF_ERROR(read_pod(&type, "value type"));
      if (!format::valid_value_type(type)) {
        return error(type_at, format::cat("key '", kv.key, "' has unknown value type ", type));
      }
      uint64_t value_at = src_.pos();
      TANDEM_RETURN_IF_ERROR(read_value(static_cast<ValueType>(type), 0, kv.key, &kv.value));
      if (kv.key == "general.alignment") {
        if (kv.value.type != ValueType::kUint32) {
          return error(type_at, format::cat("general.alignment has type ",
                                            value_type_name(kv.value.type), ", expected u32"));
        }
        uint32_t a = std::get<uint32_t>(kv.value.data);
        if (!format::is_power_of_two(a)) {
          return error(value_at,
                       format::cat("general.alignment ", a, " is not a non-zero power of two"));
        }
        out_.alignment_ = a;
      }
      context_ = {};
      out_.metadata_.push_back(std::move(kv));
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::Status read_scalar(Value* out) {
    T v{};
    TANDEM_RETURN_IF_ERROR(read_pod(&v, "the value"));
    out->data = v;
    return absl::OkStatus();
  }

  absl::Status read_value(ValueType type, int depth, std::string_view key, Value* out) {
    out->type = type;
    switch (type) {
      case ValueType::kUint8:
        return read_scalar<uint8_t>(out);
      case ValueType::kInt8:
        return read_scalar<int8_t>(out);
      case ValueType::kUint16:
        return read_scalar<uint16_t>(out);
      case ValueType::kInt16:
        return read_scalar<int16_t>(out);
      case ValueType::kUint32:
        return read_scalar<uint32_t>(out);
      case ValueType::kInt32:
        return read_scalar<int32_t>(out);
      case ValueType::kFloat32:
        return read_scalar<float>(out);
      case ValueType::kUint64:
        return read_scalar<uint64_t>(out);
      case ValueType::kInt64:
        return read_scalar<int64_t>(out);
      case ValueType::kFloat64:
        return read_scalar<double>(out);
      case ValueType::kBool: {
        uint64_t at = src_.pos();
        uint8_t b = 0;
        TANDEM_RETURN_IF_ERROR(read_pod(&b, "the value"));
        if (b > 1) {
          return error(at, format::cat("key '", key, "' has bool value ", b, " (must be 0 or 1)"));
        }
        out->data = b == 1;
        return absl::OkStatus();
      }
      case ValueType::kString: {
        std::string s;
        TANDEM_RETURN_IF_ERROR(read_string(&s, "the value"));
        out->data = std::move(s);
        return absl::OkStatus();
      }
      case ValueType::kArray:
        return read_array(depth, key, out);
    }
    return error(src_.pos(), "internal: unhandled value type");  // unreachable: types are checked
  }

  absl::Status read_array(int depth, std::string_view key, Value* out) {
    uint64_t at = src_.pos();
    if (depth >= format::kMaxArrayDepth) {
      return error(at, format::cat("key '", key, "' nests arrays deeper than ",
                                   format::kMaxArrayDepth, " levels"));
    }
    uint32_t elem = 0;
    TANDEM_RETURN_IF_ERROR(read_pod(&elem, "the array element type"));
    if (!format::valid_value_type(elem)) {
      return error(at, format::cat("key '", key, "' is an array of unknown value type ", elem));
    }
    auto elem_type = static_cast<ValueType>(elem);
    uint64_t count_at = src_.pos();
    uint64_t count = 0;
    TANDEM_RETURN_IF_ERROR(read_pod(&count, "the array length"));
    uint64_t min_size = format::min_element_size(elem_type);
    if (count > src_.remaining() / min_size) {
      return error(count_at, format::cat("key '", key, "' has an array of ", count, " ",
                                         value_type_name(elem_type), " elements but only ",
                                         src_.remaining(), " bytes remain"));
    }
    out->elem_type = elem_type;
    Value::Array elems(static_cast<size_t>(count));
    for (Value& e : elems) {
      TANDEM_RETURN_IF_ERROR(read_value(elem_type, depth + 1, key, &e));
    }
    out->data = std::move(elems);
    return absl::OkStatus();
  }

  absl::Status parse_tensor_infos() {
    out_.tensors_.reserve(static_cast<size_t>(n_tensors_));
    info_offsets_.reserve(static_cast<size_t>(n_tensors_));
    absl::flat_hash_set<std::string> names;
    names.reserve(static_cast<size_t>(n_tensors_));
    for (uint64_t i = 0; i < n_tensors_; ++i) {
      uint64_t info_at = src_.pos();
      TensorInfo t;
      context_ = {};
      TANDEM_RETURN_IF_ERROR(read_string(&t.name, format::cat("name of tensor ", i)));
      context_kind_ = "tensor";
      context_ = t.name;
      if (!names.insert(t.name).second) {
        return error(info_at, format::cat("duplicate tensor name '", t.name, "'"));
      }
      std::string what = format::cat("tensor '", t.name, "'");
      uint64_t field_at = src_.pos();
      uint32_t n_dims = 0;
      TANDEM_RETURN_IF_ERROR(read_pod(&n_dims, "n_dims"));
      if (n_dims < 1 || n_dims > static_cast<uint32_t>(kMaxDims)) {
        return error(field_at,
                     format::cat(what, " has n_dims ", n_dims, " (must be 1..", kMaxDims, ")"));
      }
      t.dims.resize(n_dims);
      for (uint32_t d = 0; d < n_dims; ++d) {
        field_at = src_.pos();
        uint64_t dim = 0;
        TANDEM_RETURN_IF_ERROR(read_pod(&dim, "a dimension"));
        if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          return error(field_at, format::cat(what, " dimension ", d, " is ", dim, ", too large"));
        }
        t.dims[d] = static_cast<int64_t>(dim);
      }
      uint64_t type_at = src_.pos();
      uint32_t type = 0;
      TANDEM_RETURN_IF_ERROR(read_pod(&type, "the type"));
      std::string bad = format::check_tensor_shape(t.dims, type, &t.n_bytes);
      if (!bad.empty()) return error(type_at, format::cat(what, " ", bad));
      t.type = static_cast<DType>(type);
      field_at = src_.pos();
      TANDEM_RETURN_IF_ERROR(read_pod(&t.offset, "the offset"));
      if (t.offset % out_.alignment_ != 0) {
        return error(field_at,
                     format::cat(what, " offset ", t.offset, " is not a multiple of the alignment ",
                                 out_.alignment_));
      }
      context_ = {};
      out_.tensors_.push_back(std::move(t));
      info_offsets_.push_back(info_at);
    }
    return absl::OkStatus();
  }

  absl::Status check_tensor_data() {
    uint64_t end_of_infos = src_.pos();
    if (end_of_infos > std::numeric_limits<uint64_t>::max() - out_.alignment_) {
      return error(end_of_infos, "data section offset overflows");
    }
    out_.data_offset_ = format::align_up(end_of_infos, out_.alignment_);
    std::vector<TensorInfo>& tensors = out_.tensors_;
    for (size_t i = 0; i < tensors.size(); ++i) {
      TensorInfo& t = tensors[i];
      uint64_t end = 0;
      if (__builtin_add_overflow(out_.data_offset_, t.offset, &t.file_offset) ||
          __builtin_add_overflow(t.file_offset, t.n_bytes, &end)) {
        return error(info_offsets_[i], format::cat("tensor '", t.name, "' offset ", t.offset, " + ",
                                                   t.n_bytes, " bytes overflows"));
      }
      if (!options_.allow_missing_data && end > out_.file_size_) {
        return error(info_offsets_[i],
                     format::cat("tensor '", t.name, "' data [", t.file_offset, ", ", end,
                                 ") extends past end of file (", out_.file_size_, " bytes)"));
      }
    }
    // Overlap: walk tensors by offset, tracking the one that reaches furthest.
    std::vector<size_t> order(tensors.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return tensors[a].offset < tensors[b].offset; });
    const TensorInfo* furthest = nullptr;
    for (size_t i : order) {
      const TensorInfo& t = tensors[i];
      if (t.n_bytes == 0) continue;  // an empty range overlaps nothing
      if (furthest != nullptr && t.file_offset < furthest->file_offset + furthest->n_bytes) {
        return error(info_offsets_[i],
                     format::cat("tensor '", t.name, "' data [", t.file_offset, ", ",
                                 t.file_offset + t.n_bytes, ") overlaps tensor '", furthest->name,
                                 "' data [", furthest->file_offset, ", ",
                                 furthest->file_offset + furthest->n_bytes, ")"));
      }
      if (furthest == nullptr ||
          t.file_offset + t.n_bytes > furthest->file_offset + furthest->n_bytes) {
        furthest = &t;
      }
    }
    return absl::OkStatus();
  }

  ByteSource& src_;
  OpenOptions options_;
  File& out_;
  uint64_t n_tensors_ = 0;
  uint64_t n_kv_ = 0;
  std::vector<uint64_t> info_offsets_;  // where each tensor's info starts, for messages
  std::string_view context_kind_;       // "key" or "tensor"
  std::string_view context_;            // the key or tensor being parsed, or empty
};

absl::StatusOr<File> File::Open(const std::string& path, OpenOptions options) {
  int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw < 0) {
    int err = errno;
    return absl::ErrnoToStatus(err, format::cat(path, ": cannot open"));
  }
  auto fd = std::make_shared<const Fd>(raw);
  struct stat st {};
  if (::fstat(fd->fd, &st) != 0) {
    int err = errno;
    return absl::ErrnoToStatus(err, format::cat(path, ": cannot stat"));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(format::cat(path, ": not a regular file"));
  }
  File file;
  file.path_ = path;
  file.file_size_ = static_cast<uint64_t>(st.st_size);
  ByteSource src(fd->fd, file.file_size_, path);
  TANDEM_RETURN_IF_ERROR(Parser(src, options, file).run());
  file.fd_ = std::move(fd);
  return file;
}

absl::StatusOr<File> File::Parse(std::span<const uint8_t> bytes, std::string name,
                                 OpenOptions options) {
  File file;
  file.path_ = std::move(name);
  file.file_size_ = bytes.size();
  auto image = std::make_shared<const std::vector<uint8_t>>(bytes.begin(), bytes.end());
  ByteSource src{std::span<const uint8_t>(*image)};
  TANDEM_RETURN_IF_ERROR(Parser(src, options, file).run());
  file.image_ = std::move(image);
  return file;
}

absl::StatusOr<File> File::FromRemote(std::span<const uint8_t> header, uint64_t file_size,
                                      std::string name, std::shared_ptr<const RemoteBytes> remote) {
  TANDEM_ASSIGN_OR_RETURN(File file, Parse(header, name, OpenOptions{.allow_missing_data = true}));
  if (file.data_offset_ > file_size) {
    return absl::InvalidArgumentError(format::cat(name, ": its data starts at ", file.data_offset_,
                                                  ", past its size of ", file_size, " bytes"));
  }
  for (const TensorInfo& t : file.tensors_) {
    if (t.file_offset > file_size || t.n_bytes > file_size - t.file_offset) {
      return absl::InvalidArgumentError(format::cat(name, ": tensor '", t.name,
                                                    "' ends past the file's ", file_size,
                                                    " bytes"));
    }
  }
  file.file_size_ = file_size;
  file.image_.reset();
  file.remote_ = std::move(remote);
  return file;
}

}  // namespace tandem::gguf
