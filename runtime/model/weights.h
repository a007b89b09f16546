// Weights in memory the engine owns: each tensor is read from the GGUF file by
// a ranged read into an aligned buffer (or, as an option, pointed into a
// read-only mapping of the file). Shapes and types are checked on load so the
// model code can trust them. Matrices the kernels read faster in their packed
// layout (see kernels::pack_preferred) are repacked once, in place, here, by
// the pack pool's threads; the token embedding, read row by row, never is.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "partition/shard.h"
#include "runtime/gguf/gguf.h"
#include "runtime/kernels/cpu/matmul.h"

namespace tandem::model {

// A matrix [n_rows][n_cols] (a vector has n_rows == 1), rows contiguous.
struct Weight {
  std::string name;
  DType type = DType::kF32;
  int64_t n_rows = 0;
  int64_t n_cols = 0;
  const void* data = nullptr;
  // kPacked only for matrices: then data is for kernels::matmul alone.
  kernels::Layout layout = kernels::Layout::kRowMajor;

  kernels::Matrix matrix() const { return {type, data, n_rows, n_cols, layout}; }
  const float* f32() const { return static_cast<const float*>(data); }
  size_t bytes() const {
    return layout == kernels::Layout::kPacked
               ? kernels::packed_bytes(type, n_rows, n_cols)
               : row_bytes(type, n_cols) * static_cast<size_t>(n_rows);
  }
};

struct LoadOptions {
  bool use_mmap = false;  // map the file instead of reading into owned memory
  // Repack matrices where kernels::pack_preferred says it pays (never with
  // use_mmap: the mapping is read-only).
  bool pack = true;
  // Threads that pack (nullptr: the loading thread alone). The engine lends
  // its compute pool, idle while it loads.
  kernels::ThreadPool* pack_pool = nullptr;
};

struct LoadStats {
  uint64_t bytes = 0;  // of the tensors (or slices) loaded: read, or mapped and touched
  double seconds = 0;
  int64_t n_tensors = 0;
};

// The part of a matrix [n_rows][n_cols] that a rank holds: rows
// [rows.begin, rows.end) and columns [cols.begin, cols.end). An empty range
// means all of them.
struct Slice {
  partition::Range rows;
  partition::Range cols;
};

class WeightStore {
 public:
  static absl::StatusOr<std::unique_ptr<WeightStore>> Create(const gguf::File& file,
                                                             const LoadOptions& options);
  ~WeightStore();
  WeightStore(const WeightStore&) = delete;
  WeightStore& operator=(const WeightStore&) = delete;

  // kMatrix may be repacked for the kernels at load. kEmbedding is a matrix
  // read by row lookups (kernels::dequantize_row), and also the output head
  // when the model ties them, so it stays row-major.
  enum class Kind { kMatrix, kEmbedding, kF32Vector };
  // Loads `slice` of `name`, which must have ggml dims {n_cols, n_rows} (or
  // {n} for a vector). Only the slice's bytes are read (or, with use_mmap,
  // touched). Column slices must cut the type's blocks whole. Matrices must be
  // of a type the kernels support; vectors F32.
  absl::StatusOr<Weight> load(std::string_view name, int64_t n_cols, int64_t n_rows, Kind kind,
                              Slice slice = {});
  // As load(), but a missing tensor gives nullopt.
  absl::StatusOr<std::optional<Weight>> load_optional(std::string_view name, int64_t n_cols,
                                                      int64_t n_rows, Kind kind, Slice slice = {});

  const LoadStats& stats() const { return stats_; }
  // Forgets LoadOptions::pack_pool, which is only lent for loading: later
  // loads pack on the calling thread.
  void release_pack_pool() { pack_pool_ = nullptr; }

 private:
  explicit WeightStore(const gguf::File& file);
  absl::Status map_file();

  const gguf::File& file_;
  struct Buffer;
  std::vector<std::unique_ptr<Buffer>> buffers_;
  const uint8_t* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  LoadStats stats_;
  bool pack_ = true;
  kernels::ThreadPool* pack_pool_ = nullptr;
};

}  // namespace tandem::model
