// Internal interface between the attention dispatcher (attention.cc) and the
// per-instruction-set files that include attention_tile.inc. As with the
// matmul kernels, nothing shared here is inline: each ISA file is compiled
// with its own -m flags.
#pragma once

#include <algorithm>
#include <cstdint>

#include "runtime/kernels/cpu/attention.h"

namespace tandem::kernels::internal {

// One work unit: the query rows of one tile of tokens (consecutive in the
// batch, of one sequence) for the query heads of one KV head, over the cache
// positions [pos_begin, pos_end) (pos_begin a multiple of the block size).
// Row r = t * group + g is token t of the tile and query head
// kv_head * group + g.
struct AttentionTile {
  const float* q;           // row r at q + t * q_stride + g * head_dim
  int64_t q_stride;         // floats between tokens
  const int32_t* positions;  // [n_tokens]: token t sees positions <= positions[t]
  int64_t n_tokens;
  int64_t group;
  int64_t head_dim;
  float scale;
  KvLayerView kv;
  const int32_t* block_table;
  int64_t kv_head;
  int64_t pos_begin;
  int64_t pos_end;
  // Results, not normalized: running max m and sum l per row, and the
  // accumulator acc (row r at acc + t * acc_stride + g * head_dim).
  float* m;  // [rows]
  float* l;  // [rows]
  float* acc;
  int64_t acc_stride;
  float* scratch;  // attention_scratch_floats(block_size, head_dim, group) floats
};

// Cache positions per step of a tile's online softmax: whole KV blocks, at
// least kAttentionSpan positions when the blocks are smaller, so that a row's
// per-step work (max, rescale, the accumulator's load and store) is amortized
// over more keys than one block of 16 holds.
inline constexpr int64_t kAttentionSpan = 64;
inline int64_t attention_span(int64_t block_size) {
  return block_size * std::max<int64_t>(1, kAttentionSpan / block_size);
}
// The keys and values of one span, converted to f32, the scores of a token's
// group of query rows over it, and their rescale factors.
inline int64_t attention_scratch_floats(int64_t max_block_size, int64_t head_dim,
                                        int64_t group) {
  const int64_t span = std::max(kAttentionSpan, max_block_size);  // >= any attention_span
  return 2 * span * head_dim + span * group + group;
}

using AttendTile = void (*)(const AttentionTile& tile);
using ConvertF32ToF16 = void (*)(const float* src, uint16_t* dst, int64_t n);
using SwiGlu = void (*)(float* gate, const float* up, int64_t n);

// The attention kernels, the KV cache's conversion, and SwiGLU (which shares
// the softmax's vector exp).
struct AttentionKernels {
  AttendTile attend = nullptr;
  ConvertF32ToF16 to_f16 = nullptr;
  SwiGlu swiglu = nullptr;
};

const AttentionKernels& portable_attention_kernels();
#if defined(TANDEM_KERNELS_X86)
const AttentionKernels& avx2_attention_kernels();
#endif
#if defined(TANDEM_KERNELS_NEON)
const AttentionKernels& neon_attention_kernels();
#endif

}  // namespace tandem::kernels::internal
