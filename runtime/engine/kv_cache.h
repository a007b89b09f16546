// The paged KV cache: fixed-size blocks of key/value vectors shared by every
// sequence, each sequence holding a table of its blocks. Everything is
// allocated once at construction; adding tokens only takes blocks from a free
// list, so the decode path allocates nothing. Elements are f16 by default (as
// in llama.cpp: half the memory and half the bytes attention reads per token)
// or f32; writes convert from f32.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/kernels/cpu/attention.h"
#include "runtime/tensor/dtype.h"
#include "runtime/tensor/host_buffer.h"

namespace tandem::engine {

struct KvCacheConfig {
  int64_t n_layers = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int32_t max_sequences = 1;
  int64_t max_seq_len = 0;  // positions per sequence
  int64_t block_size = 16;  // positions per block
  int64_t n_blocks = 0;     // 0: enough for every sequence at max_seq_len
  DType type = DType::kF16;  // of the elements: kF16 or kF32
};

// Bytes of one cached element of `type` (2 for kF16, 4 for kF32).
int64_t kv_element_bytes(DType type);

class KvCache {
 public:
  static absl::StatusOr<KvCache> Create(const KvCacheConfig& config);
  // Bytes that Create would allocate, for memory budgets.
  static size_t bytes_for(const KvCacheConfig& config);

  const KvCacheConfig& config() const { return config_; }
  size_t bytes() const { return storage_.size(); }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }

  // A sequence slot is an id in [0, max_sequences).
  absl::Status open_sequence(int32_t seq);
  void close_sequence(int32_t seq);  // returns its blocks; closing a closed slot is a no-op
  bool is_open(int32_t seq) const;

  // Makes positions [0, n_positions) of `seq` writable: RESOURCE_EXHAUSTED when
  // the pool has no free block, OUT_OF_RANGE past max_seq_len.
  absl::Status reserve(int32_t seq, int64_t n_positions);
  // Drops positions >= n_positions (for example to rewind a speculative step).
  void truncate(int32_t seq, int64_t n_positions);
  int64_t reserved_positions(int32_t seq) const;

  // Writes the keys and values of every KV head of layer `il` at `pos` (which
  // must be reserved), converting to the element type: k and v are
  // [n_kv_heads][head_dim] floats.
  void store(int64_t il, int32_t seq, int64_t pos, const float* k, const float* v);

  // f32 caches only: the head_dim floats of key/value head `h` at `pos`.
  float* key(int64_t il, int32_t seq, int64_t pos, int64_t h) {
    return slot_f32(il, seq, pos, h, 0);
  }
  float* value(int64_t il, int32_t seq, int64_t pos, int64_t h) {
    return slot_f32(il, seq, pos, h, 1);
  }
  // The key/value element at `pos` as a float, whatever the type (for tests).
  float key_at(int64_t il, int32_t seq, int64_t pos, int64_t h, int64_t d) const;
  float value_at(int64_t il, int32_t seq, int64_t pos, int64_t h, int64_t d) const;

  // Layer `il` as the attention kernel reads it (block tables included).
  kernels::KvLayerView layer_view(int64_t il) const;

 private:
  KvCache(const KvCacheConfig& config, HostBuffer storage);
  int64_t block_stride_head() const { return config_.block_size * config_.head_dim; }
  int64_t block_stride_kv() const { return config_.n_kv_heads * block_stride_head(); }
  // Element index of key/value head h at pos.
  int64_t element(int64_t il, int32_t seq, int64_t pos, int64_t h, int kv) const;
  float* slot_f32(int64_t il, int32_t seq, int64_t pos, int64_t h, int kv);
  float element_at(int64_t index) const;

  KvCacheConfig config_;
  // Elements [n_layers][n_blocks][2][n_kv_heads][block_size][head_dim].
  HostBuffer storage_;
  std::vector<std::vector<int32_t>> blocks_;  // per sequence, capacity reserved up front
  std::vector<const int32_t*> tables_;        // blocks_[seq].data(): stable, never reallocated
  std::vector<uint8_t> open_;
  std::vector<int32_t> free_;
};

}  // namespace tandem::engine
