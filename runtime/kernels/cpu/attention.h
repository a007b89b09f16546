// Causal grouped-query attention over a paged KV cache (f32 or f16), on the
// CPU. All query heads of a GQA group, and for prefill a tile of consecutive
// tokens of one sequence, are processed together, so each key/value block is
// read (and converted from f16) once per tile. Blocks are consumed with an
// online softmax (running max, running sum, rescaled accumulator): nothing as
// long as the context is ever materialized. Decode steps with too few (token
// tile, KV head) items to feed every thread also split the positions of each
// item and merge the partial softmaxes (split-K). Buffers are sized once in an
// AttentionWorkspace, so a call allocates nothing.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/kernels/cpu/matmul.h"
#include "runtime/kernels/cpu/thread_pool.h"
#include "runtime/tensor/dtype.h"

namespace tandem::kernels {

// One layer of a paged KV cache as attention reads it. The keys of cache
// block b (an id from a sequence's block table) and KV head h are block_size
// rows of head_dim elements starting at element b * block_stride +
// h * head_stride of k; the values sit at the same offset of v.
struct KvLayerView {
  DType type = DType::kF32;  // kF32 or kF16
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t block_stride = 0;  // elements
  int64_t head_stride = 0;   // elements
  int64_t block_size = 0;    // positions per block
  const int32_t* const* block_tables = nullptr;  // indexed by sequence id
};

struct AttentionShape {
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;  // a multiple of 8: the SIMD width of every kernel
};

// OK when the kernels handle this shape: positive sizes, head_dim a multiple
// of 8, n_heads a multiple of n_kv_heads.
absl::Status check_attention_shape(const AttentionShape& shape);

// Per-thread scratch and the split-K partial results, for batches of up to
// max_tokens tokens over caches with blocks of up to max_block_size positions.
class AttentionWorkspace {
 public:
  static absl::StatusOr<AttentionWorkspace> Create(const AttentionShape& shape, int64_t max_tokens,
                                                   int64_t max_block_size, int n_threads);

  const AttentionShape& shape() const { return shape_; }
  int64_t max_tokens() const { return max_tokens_; }
  int64_t max_block_size() const { return max_block_size_; }
  int n_threads() const { return n_threads_; }

 private:
  friend void attention(const KvLayerView&, std::span<const int32_t>, std::span<const int32_t>,
                        const float*, float*, AttentionWorkspace&, ThreadPool&, Isa);
  AttentionShape shape_;
  int64_t max_tokens_ = 0;
  int64_t max_block_size_ = 0;
  int n_threads_ = 1;
  int64_t tile_tokens_ = 1;            // tokens per tile: group * tile_tokens_ rows
  int64_t thread_scratch_floats_ = 0;  // per thread
  std::vector<float> scratch_;         // [n_threads][thread_scratch_floats_]
  std::vector<int32_t> tiles_;         // [max_tokens][2]: first token, token count
  std::vector<float> partials_;        // split-K: [max_partials][rows][head_dim + 2]
  int64_t max_partials_ = 0;
};

// out[i] = softmax(q[i] K^T / sqrt(head_dim)) V for every token i of a batch,
// over positions [0, positions[i]] of sequence seq_ids[i], which must all be
// in the cache (this token's included). q and out are [n_tokens][n_heads *
// head_dim] (out must not overlap q); n_tokens <= ws.max_tokens(), and the
// view's block_size <= ws.max_block_size() (bugs otherwise). The pool must
// have ws.n_threads() threads or fewer.
void attention(const KvLayerView& kv, std::span<const int32_t> seq_ids,
               std::span<const int32_t> positions, const float* q, float* out,
               AttentionWorkspace& ws, ThreadPool& pool, Isa isa = best_isa());

// dst[i] = f16(src[i]) rounded to nearest even (the KV cache's writes).
void convert_f32_to_f16(const float* src, uint16_t* dst, int64_t n, Isa isa = best_isa());

// gate[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + e^-g): the FFN's
// activation, with the softmax's vector exp (relative error ~1e-7).
void swiglu(float* gate, const float* up, int64_t n, Isa isa = best_isa());

}  // namespace tandem::kernels
