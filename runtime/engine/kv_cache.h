// The paged KV cache: fixed-size blocks of key/value vectors shared by every
// sequence, each sequence holding a table of its blocks. Everything is
// allocated once at construction; adding tokens only takes blocks from a free
// list, so the decode path allocates nothing.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
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
};

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

  // The head_dim floats of key/value head `h` at `pos` (which must be reserved).
  float* key(int64_t il, int32_t seq, int64_t pos, int64_t h) { return slot(il, seq, pos, h, 0); }
  float* value(int64_t il, int32_t seq, int64_t pos, int64_t h) { return slot(il, seq, pos, h, 1); }

  // [block_size][head_dim] keys/values of block `ib` of a sequence, for attention.
  const float* key_block(int64_t il, int32_t seq, int64_t ib, int64_t h) const {
    return block_base(il, blocks_[seq][ib], 0) + h * block_stride_head();
  }
  const float* value_block(int64_t il, int32_t seq, int64_t ib, int64_t h) const {
    return block_base(il, blocks_[seq][ib], 1) + h * block_stride_head();
  }

 private:
  KvCache(const KvCacheConfig& config, HostBuffer storage);
  int64_t block_stride_head() const { return config_.block_size * config_.head_dim; }
  int64_t block_stride_kv() const { return config_.n_kv_heads * block_stride_head(); }
  const float* block_base(int64_t il, int32_t block, int kv) const {
    return storage_.as<float>() + ((il * config_.n_blocks + block) * 2 + kv) * block_stride_kv();
  }
  float* slot(int64_t il, int32_t seq, int64_t pos, int64_t h, int kv);

  KvCacheConfig config_;
  HostBuffer storage_;  // floats [n_layers][n_blocks][2][n_kv_heads][block_size][head_dim]
  std::vector<std::vector<int32_t>> blocks_;  // per sequence, capacity reserved up front
  std::vector<uint8_t> open_;
  std::vector<int32_t> free_;
};

}  // namespace tandem::engine
