#include "runtime/engine/kv_cache.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "runtime/kernels/cpu/convert.h"

namespace tandem::engine {
namespace {

int64_t blocks_per_sequence(const KvCacheConfig& c) {
  return (c.max_seq_len + c.block_size - 1) / c.block_size;
}

KvCacheConfig with_defaults(KvCacheConfig c) {
  if (c.n_blocks == 0) c.n_blocks = blocks_per_sequence(c) * c.max_sequences;
  return c;
}

}  // namespace

int64_t kv_element_bytes(DType type) { return type == DType::kF32 ? 4 : 2; }

size_t KvCache::bytes_for(const KvCacheConfig& config) {
  KvCacheConfig c = with_defaults(config);
  return static_cast<size_t>(c.n_layers * c.n_blocks * 2 * c.n_kv_heads * c.block_size *
                             c.head_dim) *
         kv_element_bytes(c.type);
}

absl::StatusOr<KvCache> KvCache::Create(const KvCacheConfig& config) {
  if (config.n_layers <= 0 || config.n_kv_heads <= 0 || config.head_dim <= 0) {
    return absl::InvalidArgumentError("KV cache: layers, KV heads and head_dim must be positive");
  }
  if (config.max_sequences <= 0 || config.max_seq_len <= 0 || config.block_size <= 0 ||
      config.n_blocks < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache: bad sizes (sequences ", config.max_sequences, ", length ",
                     config.max_seq_len, ", block ", config.block_size, ")"));
  }
  if (config.type != DType::kF16 && config.type != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache: element type ",
                                                   dtype_name(config.type),
                                                   " is neither f16 nor f32"));
  }
  KvCacheConfig c = with_defaults(config);
  if (c.n_blocks > INT32_MAX) return absl::InvalidArgumentError("KV cache: too many blocks");
  TANDEM_ASSIGN_OR_RETURN(HostBuffer storage, HostBuffer::Allocate(bytes_for(c)));
  return KvCache(c, std::move(storage));
}

KvCache::KvCache(const KvCacheConfig& config, HostBuffer storage)
    : config_(config),
      storage_(std::move(storage)),
      blocks_(config.max_sequences),
      open_(config.max_sequences, 0) {
  for (auto& table : blocks_) {
    table.reserve(blocks_per_sequence(config_));
    tables_.push_back(table.data());
  }
  free_.reserve(config_.n_blocks);
  for (int64_t b = config_.n_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

absl::Status KvCache::open_sequence(int32_t seq) {
  if (seq < 0 || seq >= config_.max_sequences) {
    return absl::InvalidArgumentError(absl::StrCat("sequence id ", seq, " outside [0, ",
                                                   config_.max_sequences, ")"));
  }
  if (open_[seq]) return absl::FailedPreconditionError(absl::StrCat("sequence ", seq, " is open"));
  open_[seq] = 1;
  return absl::OkStatus();
}

void KvCache::close_sequence(int32_t seq) {
  if (seq < 0 || seq >= config_.max_sequences || !open_[seq]) return;
  truncate(seq, 0);
  open_[seq] = 0;
}

bool KvCache::is_open(int32_t seq) const {
  return seq >= 0 && seq < config_.max_sequences && open_[seq];
}

absl::Status KvCache::reserve(int32_t seq, int64_t n_positions) {
  if (!is_open(seq)) return absl::FailedPreconditionError(absl::StrCat("sequence ", seq, " is not open"));
  if (n_positions > config_.max_seq_len) {
    return absl::OutOfRangeError(absl::StrCat("sequence ", seq, " needs ", n_positions,
                                              " positions; the context holds ",
                                              config_.max_seq_len));
  }
  auto& table = blocks_[seq];
  const int64_t needed = (n_positions + config_.block_size - 1) / config_.block_size;
  if (needed - static_cast<int64_t>(table.size()) > static_cast<int64_t>(free_.size())) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: sequence ", seq, " needs ",
                                                     needed - table.size(), " more blocks, ",
                                                     free_.size(), " free"));
  }
  while (static_cast<int64_t>(table.size()) < needed) {
    table.push_back(free_.back());  // capacity reserved in the constructor: no allocation
    free_.pop_back();
  }
  return absl::OkStatus();
}

void KvCache::truncate(int32_t seq, int64_t n_positions) {
  auto& table = blocks_[seq];
  const int64_t keep = (n_positions + config_.block_size - 1) / config_.block_size;
  while (static_cast<int64_t>(table.size()) > keep) {
    free_.push_back(table.back());
    table.pop_back();
  }
}

int64_t KvCache::reserved_positions(int32_t seq) const {
  return static_cast<int64_t>(blocks_[seq].size()) * config_.block_size;
}

int64_t KvCache::element(int64_t il, int32_t seq, int64_t pos, int64_t h, int kv) const {
  const int64_t ib = pos / config_.block_size;
  TANDEM_CHECK(ib < static_cast<int64_t>(blocks_[seq].size()));
  return ((il * config_.n_blocks + blocks_[seq][ib]) * 2 + kv) * block_stride_kv() +
         h * block_stride_head() + (pos % config_.block_size) * config_.head_dim;
}

float* KvCache::slot_f32(int64_t il, int32_t seq, int64_t pos, int64_t h, int kv) {
  TANDEM_CHECK(config_.type == DType::kF32);
  return storage_.as<float>() + element(il, seq, pos, h, kv);
}

void KvCache::store(int64_t il, int32_t seq, int64_t pos, const float* k, const float* v) {
  const int64_t hd = config_.head_dim;
  for (int64_t h = 0; h < config_.n_kv_heads; ++h) {
    const int64_t ek = element(il, seq, pos, h, 0);
    const int64_t ev = ek + block_stride_kv();
    if (config_.type == DType::kF32) {
      std::copy_n(k + h * hd, hd, storage_.as<float>() + ek);
      std::copy_n(v + h * hd, hd, storage_.as<float>() + ev);
    } else {
      kernels::convert_f32_to_f16(k + h * hd, storage_.as<uint16_t>() + ek, hd);
      kernels::convert_f32_to_f16(v + h * hd, storage_.as<uint16_t>() + ev, hd);
    }
  }
}

float KvCache::element_at(int64_t index) const {
  if (config_.type == DType::kF32) return storage_.as<float>()[index];
  return kernels::fp16_to_f32(storage_.as<uint16_t>()[index]);
}

float KvCache::key_at(int64_t il, int32_t seq, int64_t pos, int64_t h, int64_t d) const {
  return element_at(element(il, seq, pos, h, 0) + d);
}

float KvCache::value_at(int64_t il, int32_t seq, int64_t pos, int64_t h, int64_t d) const {
  return element_at(element(il, seq, pos, h, 1) + d);
}

kernels::KvLayerView KvCache::layer_view(int64_t il) const {
  kernels::KvLayerView view;
  view.type = config_.type;
  const int64_t first = il * config_.n_blocks * 2 * block_stride_kv();
  const size_t bytes = static_cast<size_t>(kv_element_bytes(config_.type));
  view.k = storage_.data() + first * bytes;
  view.v = storage_.data() + (first + block_stride_kv()) * bytes;
  view.block_stride = 2 * block_stride_kv();
  view.head_stride = block_stride_head();
  view.block_size = config_.block_size;
  view.block_tables = tables_.data();
  return view;
}

}  // namespace tandem::engine
