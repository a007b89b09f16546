#include "runtime/model/weights.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "runtime/kernels/cpu/convert.h"
#include "runtime/tensor/host_buffer.h"

namespace tandem::model {

struct WeightStore::Buffer {
  HostBuffer memory;
};


WeightStore::WeightStore(const gguf::File& file) : file_(file) {}

absl::StatusOr<std::unique_ptr<WeightStore>> WeightStore::Create(const gguf::File& file,
                                                                 const LoadOptions& options) {
  std::unique_ptr<WeightStore> store(new WeightStore(file));
  store->pack_ = options.pack;
  store->pack_pool_ = options.pack_pool;
  if (options.use_mmap && file.is_remote()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.path(), " is streamed from another box: there is no file to map"));
  }
  if (options.use_mmap) TANDEM_RETURN_IF_ERROR(store->map_file());
  return store;
}

WeightStore::~WeightStore() {
  if (mapping_ != nullptr) munmap(const_cast<uint8_t*>(mapping_), mapping_size_);
}

absl::Status WeightStore::map_file() {
  const int fd = ::open(file_.path().c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat(file_.path(), ": cannot open: ", std::strerror(errno)));
  }
  void* p = mmap(nullptr, file_.file_size(), PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);
  if (p == MAP_FAILED) {
    return absl::InternalError(absl::StrCat(file_.path(), ": mmap failed: ", std::strerror(err)));
  }
  mapping_ = static_cast<const uint8_t*>(p);
  mapping_size_ = file_.file_size();
  return absl::OkStatus();
}

namespace {

// The slice with empty ranges widened to the whole tensor, checked against it
// and against the type's blocks.
absl::StatusOr<Slice> resolve_slice(const std::string& name, DType type, int64_t n_rows,
                                    int64_t n_cols, Slice s) {
  if (s.rows.empty()) s.rows = {0, n_rows};
  if (s.cols.empty()) s.cols = {0, n_cols};
  if (s.rows.begin < 0 || s.rows.end > n_rows || s.cols.begin < 0 || s.cols.end > n_cols) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", name, "': slice rows [", s.rows.begin, ", ", s.rows.end, ") cols [",
        s.cols.begin, ", ", s.cols.end, ") outside [", n_rows, ", ", n_cols, "]"));
  }
  const int64_t block = dtype_info(type)->block_size;
  if (s.cols.begin % block != 0 || s.cols.size() % block != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", name, "': columns [", s.cols.begin, ", ", s.cols.end, ") cut its ",
        dtype_name(type), " blocks of ", block));
  }
  return s;
}

}  // namespace

absl::StatusOr<std::optional<Weight>> WeightStore::load_optional(std::string_view name_view,
                                                                 int64_t n_cols, int64_t n_rows,
                                                                 Kind kind, Slice slice) {
  const std::string name(name_view);  // this abseil's StrCat takes no std::string_view
  const gguf::TensorInfo* info = file_.find_tensor(name);
  if (info == nullptr) return std::optional<Weight>();
  const std::vector<int64_t> want = kind == Kind::kF32Vector ? std::vector<int64_t>{n_cols}
                                                             : std::vector<int64_t>{n_cols, n_rows};
  if (info->dims != want) {
    return absl::InvalidArgumentError(absl::StrCat(
        file_.path(), ": tensor '", name, "' has shape [", absl::StrJoin(info->dims, ", "),
        "], the model's hyper-parameters need [", absl::StrJoin(want, ", "), "]"));
  }
  if (kind == Kind::kF32Vector && info->type != DType::kF32) {
    return absl::UnimplementedError(absl::StrCat(file_.path(), ": tensor '", name, "' is ",
                                                 dtype_name(info->type), "; norms must be f32"));
  }
  if (kind != Kind::kF32Vector && !kernels::kernels_support(info->type)) {
    return absl::UnimplementedError(absl::StrCat(file_.path(), ": tensor '", name, "' has type ",
                                                 dtype_name(info->type),
                                                 ", which this build does not support"));
  }
  if (kind == Kind::kF32Vector) n_rows = 1;
  TANDEM_ASSIGN_OR_RETURN(slice, resolve_slice(name, info->type, n_rows, n_cols, slice));
  Weight w;
  w.name = name;
  w.type = info->type;
  w.n_cols = slice.cols.size();
  w.n_rows = slice.rows.size();
  const size_t full_row = row_bytes(w.type, n_cols);
  const size_t part_row = row_bytes(w.type, w.n_cols);
  const size_t col_offset = row_bytes(w.type, slice.cols.begin);
  const bool whole_rows = w.n_cols == n_cols;
  const size_t slice_bytes = part_row * static_cast<size_t>(w.n_rows);
  const auto start = std::chrono::steady_clock::now();
  if (mapping_ != nullptr && whole_rows) {
    w.data = mapping_ + info->file_offset + full_row * slice.rows.begin;
  } else {
    const bool pack = pack_ && kind == Kind::kMatrix &&
                      kernels::pack_preferred(w.type);
    const size_t bytes = pack ? kernels::packed_bytes(w.type, w.n_rows, w.n_cols) : slice_bytes;
    auto buffer = std::make_unique<Buffer>();
    auto memory = HostBuffer::Allocate(bytes);
    if (!memory.ok()) {
      return absl::ResourceExhaustedError(
          absl::StrCat("loading '", name, "': ", memory.status().message()));
    }
    buffer->memory = std::move(*memory);
    auto* dst = static_cast<uint8_t*>(buffer->memory.data());
    if (whole_rows) {
      TANDEM_RETURN_IF_ERROR(
          file_.read_tensor_range(*info, full_row * slice.rows.begin, slice_bytes, dst));
    } else {
      // A column slice: only the slice's bytes move (one short read per row,
      // or one request when the file is on another box).
      const uint64_t first = full_row * slice.rows.begin + col_offset;
      if (mapping_ != nullptr) {
        for (int64_t r = 0; r < w.n_rows; ++r) {
          std::memcpy(dst + part_row * r, mapping_ + info->file_offset + first + full_row * r,
                      part_row);
        }
      } else {
        TANDEM_RETURN_IF_ERROR(
            file_.read_tensor_rows(*info, first, part_row, full_row, w.n_rows, dst));
      }
    }
    w.data = dst;
    if (pack) {
      // In place: the buffer holds the row-major tensor at its start.
      const kernels::Matrix packed = kernels::pack(w.matrix(), dst, pack_pool_);
      w.layout = packed.layout;
    }
    buffers_.push_back(std::move(buffer));
  }
  stats_.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stats_.bytes += slice_bytes;
  stats_.n_tensors += 1;
  return std::optional<Weight>(std::move(w));
}

absl::StatusOr<Weight> WeightStore::load(std::string_view name_view, int64_t n_cols, int64_t n_rows,
                                         Kind kind, Slice slice) {
  const std::string name(name_view);
  TANDEM_ASSIGN_OR_RETURN(std::optional<Weight> w,
                          load_optional(name, n_cols, n_rows, kind, slice));
  if (!w) {
    return absl::NotFoundError(absl::StrCat(file_.path(), ": missing tensor '", name, "'"));
  }
  return std::move(*w);
}

}  // namespace tandem::model
