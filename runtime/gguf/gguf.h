// GGUF (versions 2 and 3): a validating reader that parses the header, metadata
// and tensor directory without touching tensor data, ranged reads of tensor
// bytes, and a writer. Every malformed input becomes a status naming the file,
// what is wrong, and the byte offset; nothing here aborts on input.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/tensor/dtype.h"

namespace tandem::gguf {

inline constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
inline constexpr uint64_t kDefaultAlignment = 32;
inline constexpr int kMaxDims = 4;

enum class ValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

std::string_view value_type_name(ValueType type);

// One metadata value. Arrays hold their elements as Values of `elem_type`
// (nested arrays are allowed by the format and supported).
struct Value {
  using Array = std::vector<Value>;
  ValueType type = ValueType::kUint32;
  ValueType elem_type = ValueType::kUint8;  // meaningful when type == kArray
  std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool, std::string,
               uint64_t, int64_t, double, Array>
      data;

  static Value u8(uint8_t v);
  static Value i8(int8_t v);
  static Value u16(uint16_t v);
  static Value i16(int16_t v);
  static Value u32(uint32_t v);
  static Value i32(int32_t v);
  static Value f32(float v);
  static Value boolean(bool v);
  static Value str(std::string v);
  static Value u64(uint64_t v);
  static Value i64(int64_t v);
  static Value f64(double v);
  static Value array(ValueType elem_type, Array elems);
  static Value string_array(const std::vector<std::string>& v);
  static Value f32_array(const std::vector<float>& v);
  static Value i32_array(const std::vector<int32_t>& v);

  bool operator==(const Value& other) const = default;
};

struct KeyValue {
  std::string key;
  Value value;
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // ggml order: dims[0] is the row length (contiguous)
  DType type = DType::kF32;
  uint64_t offset = 0;       // relative to the data section, as stored in the file
  uint64_t file_offset = 0;  // absolute byte offset in the file
  uint64_t n_bytes = 0;

  int64_t n_elements() const;
  int64_t n_rows() const;  // product of dims[1..]
};

struct OpenOptions {
  // Accept a file whose tensor data is absent (a header-only model description
  // for planning); offsets are still validated against each other.
  bool allow_missing_data = false;
};

// Where a File's tensor bytes come from when the file is on another box: rank
// 0 of a cluster, for a rank without a copy of the model
// (runtime/engine/model_stream.h).
class RemoteBytes {
 public:
  virtual ~RemoteBytes() = default;
  // n_rows rows of row_bytes each, the first at absolute file offset `offset`
  // and each next one `stride` bytes further, packed into dst.
  virtual absl::Status read_rows(uint64_t offset, uint64_t row_bytes, uint64_t stride,
                                 uint64_t n_rows, void* dst) const = 0;
};

class File {
 public:
  // Parses the header, metadata and tensor directory of `path` and validates them.
  static absl::StatusOr<File> Open(const std::string& path, OpenOptions options = {});
  // Parses a whole in-memory image (tests, fuzzing). `name` is used in errors.
  static absl::StatusOr<File> Parse(std::span<const uint8_t> bytes, std::string name,
                                    OpenOptions options = {});

  // A file on another box: its header bytes (everything before the tensor
  // data, as read_bytes(0, data_offset()) returns them there), its size, and
  // where its tensor bytes come from. `name` is used in errors.
  static absl::StatusOr<File> FromRemote(std::span<const uint8_t> header, uint64_t file_size,
                                         std::string name,
                                         std::shared_ptr<const RemoteBytes> remote);

  const std::string& path() const { return path_; }
  bool is_remote() const { return remote_ != nullptr; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return file_size_; }

  const std::vector<KeyValue>& metadata() const { return metadata_; }
  const Value* find(std::string_view key) const;

  // Typed getters. Integers convert between widths when the value fits;
  // a missing key is NOT_FOUND, a wrong type or range INVALID_ARGUMENT; both
  // name the key and the file.
  absl::StatusOr<uint32_t> get_u32(std::string_view key) const;
  absl::StatusOr<uint64_t> get_u64(std::string_view key) const;
  absl::StatusOr<int64_t> get_i64(std::string_view key) const;
  absl::StatusOr<float> get_f32(std::string_view key) const;
  absl::StatusOr<bool> get_bool(std::string_view key) const;
  absl::StatusOr<std::string> get_string(std::string_view key) const;
  absl::StatusOr<std::vector<std::string>> get_string_array(std::string_view key) const;
  absl::StatusOr<std::vector<float>> get_f32_array(std::string_view key) const;
  absl::StatusOr<std::vector<int32_t>> get_i32_array(std::string_view key) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;

  // Ranged read of bytes [offset, offset + size) of a tensor's data into dst.
  absl::Status read_tensor(const TensorInfo& tensor, void* dst) const;
  absl::Status read_tensor_range(const TensorInfo& tensor, uint64_t offset, uint64_t size,
                                 void* dst) const;
  // n_rows rows of row_bytes each, at tensor bytes offset, offset + stride,
  // ..., packed into dst: a column slice. A remote file gets one request.
  absl::Status read_tensor_rows(const TensorInfo& tensor, uint64_t offset, uint64_t row_bytes,
                                uint64_t stride, uint64_t n_rows, void* dst) const;
  // Bytes [at, at + size) of the file itself (what a remote reader asks for);
  // OUT_OF_RANGE past its end.
  absl::Status read_bytes(uint64_t at, uint64_t size, void* dst) const;

 private:
  class Parser;  // reader.cc: fills the fields below from a ByteSource
  struct Fd;     // file_fd.h: the open descriptor that read_tensor preads from

  absl::Status value_error(std::string_view key, const Value& value,
                           std::string_view expected) const;
  absl::StatusOr<const Value*> lookup(std::string_view key) const;

  std::string path_;
  uint32_t version_ = 0;
  uint64_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  uint64_t file_size_ = 0;
  std::vector<KeyValue> metadata_;
  std::vector<TensorInfo> tensors_;
  // Non-empty when parsed from memory; otherwise reads go to fd_ (kept open
  // so that a file replaced on disk cannot change under a loaded model).
  std::shared_ptr<const std::vector<uint8_t>> image_;
  std::shared_ptr<const Fd> fd_;
  std::shared_ptr<const RemoteBytes> remote_;  // set for a file on another box
};

namespace detail {
class Sink;  // writer.cc: where Writer puts bytes (memory or a file)
}  // namespace detail

// Writes GGUF v3. Tensor data is produced one tensor at a time by a fill
// callback, so that multi-gigabyte models never sit whole in memory.
class Writer {
 public:
  using Fill = std::function<void(std::span<uint8_t> dst)>;

  void set(std::string key, Value value);  // replaces an existing key
  void set_alignment(uint32_t alignment);  // also sets general.alignment
  void add_tensor(std::string name, std::vector<int64_t> dims, DType type, Fill fill);
  void add_tensor(std::string name, std::vector<int64_t> dims, DType type,
                  std::span<const uint8_t> data);

  absl::Status write(const std::string& path) const;
  absl::StatusOr<std::vector<uint8_t>> write_to_memory() const;
  // The header, metadata and tensor directory only, padded to where the data
  // would start: a model description for planning, which File::Open reads
  // with OpenOptions::allow_missing_data. Fills are never called (they may
  // be null).
  absl::Status write_header_only(const std::string& path) const;

 private:
  struct PendingTensor {
    std::string name;
    std::vector<int64_t> dims;
    DType type;
    Fill fill;
    int64_t given_bytes = -1;  // size of the span passed to add_tensor, or -1 for a Fill
  };
  absl::Status emit(detail::Sink& sink, bool header_only = false) const;
  absl::Status write_file(const std::string& path, bool header_only) const;
  uint64_t alignment_ = kDefaultAlignment;
  std::vector<KeyValue> metadata_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace tandem::gguf
