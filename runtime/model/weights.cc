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

absl::StatusOr<std::optional<Weight>> WeightStore::load_optional(std::string_view name_view,
                                                                 int64_t n_cols, int64_t n_rows,
                                                                 Kind kind) {
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
  Weight w;
  w.name = name;
  w.type = info->type;
  w.n_cols = n_cols;
  w.n_rows = kind == Kind::kF32Vector ? 1 : n_rows;
  const auto start = std::chrono::steady_clock::now();
  if (mapping_ != nullptr) {
    w.data = mapping_ + info->file_offset;
  } else {
    const bool pack =
        pack_ && kind == Kind::kMatrix && kernels::pack_preferred(w.type);
    const size_t bytes = pack ? kernels::packed_bytes(w.type, w.n_rows, w.n_cols) : info->n_bytes;
    auto buffer = std::make_unique<Buffer>();
    auto memory = HostBuffer::Allocate(bytes);
    if (!memory.ok()) {
      return absl::ResourceExhaustedError(
          absl::StrCat("loading '", name, "': ", memory.status().message()));
    }
    buffer->memory = std::move(*memory);
    TANDEM_RETURN_IF_ERROR(file_.read_tensor(*info, buffer->memory.data()));
    w.data = buffer->memory.data();
    if (pack) {
      // In place: the buffer holds the row-major tensor at its start.
      const kernels::Matrix packed = kernels::pack(w.matrix(), buffer->memory.data());
      w.layout = packed.layout;
    }
    buffers_.push_back(std::move(buffer));
  }
  stats_.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stats_.bytes += info->n_bytes;
  stats_.n_tensors += 1;
  return std::optional<Weight>(std::move(w));
}

absl::StatusOr<Weight> WeightStore::load(std::string_view name_view, int64_t n_cols, int64_t n_rows,
                                         Kind kind) {
  const std::string name(name_view);
  TANDEM_ASSIGN_OR_RETURN(std::optional<Weight> w, load_optional(name, n_cols, n_rows, kind));
  if (!w) {
    return absl::NotFoundError(absl::StrCat(file_.path(), ": missing tensor '", name, "'"));
  }
  return std::move(*w);
}

}  // namespace tandem::model
