// The Llama architecture as llama.cpp runs GGUF files with
// general.architecture = llama: token embedding, per layer RMSNorm, grouped-
// query attention with RoPE (normal mode) over a paged KV cache, RMSNorm and a
// SwiGLU feed-forward; then the final norm and the output head (or the tied
// embedding). Every hyper-parameter comes from the file's metadata.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "partition/shard.h"
#include "runtime/engine/kv_cache.h"
#include "runtime/gguf/gguf.h"
#include "runtime/kernels/cpu/thread_pool.h"
#include "runtime/model/batch.h"
#include "runtime/model/weights.h"
#include "transport/communicator.h"

namespace tandem::model {

struct LlamaConfig {
  int64_t dim = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn_dim = 0;
  int64_t n_vocab = 0;
  int64_t context_length = 0;
  int64_t rope_dim = 0;  // leading dims of each head that RoPE rotates
  float rms_eps = 1e-5f;
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f;  // 1 / linear scaling factor

  static absl::StatusOr<LlamaConfig> FromGguf(const gguf::File& file);
  int64_t q_dim() const { return n_heads * head_dim; }
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
};

// What slicing needs of a model: its dimensions, and the largest block of the
// row-parallel matrices' types (column slices must cut whole blocks).
partition::ModelDims model_dims(const LlamaConfig& config, const gguf::File& file);

// How a rank reaches the others during a forward pass. The default is one
// rank alone.
struct ParallelContext {
  transport::Communicator* tp_group = nullptr;  // this stage's TP ranks; null when tp == 1
  transport::Communicator* world = nullptr;     // carries hidden states between stages
  int prev_stage = -1;  // world rank this stage receives hidden states from; -1: first stage
  int next_stage = -1;  // world rank it sends them to; -1: last stage
  int n_stages = 1;
  std::chrono::milliseconds timeout{60000};  // bounds every exchange of one forward pass
};

// A rank's shard: the head, FFN and vocabulary counts below are this rank's
// (LlamaModel::local()), which are the model's own on one rank.
struct LlamaLayer {
  Weight attn_norm;  // [dim] f32
  Weight wq;         // [n_heads * head_dim, dim]
  Weight wk;         // [n_kv_heads * head_dim, dim]
  Weight wv;         // [n_kv_heads * head_dim, dim]
  Weight wo;         // [dim, n_heads * head_dim]
  Weight ffn_norm;   // [dim] f32
  Weight w_gate;     // [ffn_dim, dim]
  Weight w_up;       // [ffn_dim, dim]
  Weight w_down;     // [dim, ffn_dim]
};

struct LlamaWeights {
  Weight token_embd;              // [n_vocab, dim]; first stage only
  Weight output_norm;             // [dim] f32; last stage only
  Weight output;                  // [n_vocab, dim]; the embedding when the file ties them
  std::vector<float> rope_freqs;  // [rope_dim / 2] frequency divisors, empty when absent
  std::vector<LlamaLayer> layers;
};

// Buffers for one forward pass of up to max_tokens, planned once.
struct LlamaWorkspace;

class LlamaModel {
 public:
  // Loads the whole model (one rank) or `shard` of it: only the shard's bytes
  // are read.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const gguf::File& file,
                                                          const LoadOptions& options);
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const gguf::File& file,
                                                          const LoadOptions& options,
                                                          const partition::RankShard& shard);
  ~LlamaModel();

  const LlamaConfig& config() const { return config_; }
  // This rank's part: heads, KV heads, FFN rows and layers of its shard.
  const LlamaConfig& local() const { return local_; }
  const partition::RankShard& shard() const { return shard_; }
  const LlamaWeights& weights() const { return weights_; }
  const LoadStats& load_stats() const { return store_->stats(); }
  uint64_t weight_bytes() const { return store_->stats().bytes; }

  // Buffers for batches of up to max_tokens tokens over a KV cache with
  // blocks of up to kv_block_size positions.
  absl::StatusOr<std::unique_ptr<LlamaWorkspace>> make_workspace(
      int64_t max_tokens, int64_t max_seq_len, int n_threads,
      int64_t kv_block_size = engine::KvCacheConfig{}.block_size) const;

  // Runs `batch` through this rank's layers, appending its keys and values to
  // `cache` (which holds this rank's layers and KV heads). On the last stage
  // it writes the logits of each token that wants them, in batch order, to
  // `logits` ([n_outputs][n_vocab], gathered over the TP group). Every rank of
  // the layout calls it with the same batch. Bad token ids, positions or
  // sequences are INVALID_ARGUMENT, a full cache RESOURCE_EXHAUSTED, both
  // found before anything is exchanged; a lost peer is UNAVAILABLE or
  // DEADLINE_EXCEEDED.
  absl::Status forward(const Batch& batch, engine::KvCache& cache, LlamaWorkspace& ws,
                       kernels::ThreadPool& pool, std::span<float> logits,
                       const ParallelContext& parallel = {}) const;

  // The checks forward() makes before it touches anything.
  absl::Status validate(const Batch& batch, const engine::KvCache& cache,
                        const LlamaWorkspace& ws) const;

 private:
  LlamaModel() = default;
  absl::Status run_micro_batch(const Batch& batch, int64_t row0, int64_t out_row,
                               engine::KvCache& cache,
                               LlamaWorkspace& ws, kernels::ThreadPool& pool, std::span<float> logits,
                               const ParallelContext& parallel, transport::Deadline deadline) const;
  absl::Status gather_logits(int64_t n_out, LlamaWorkspace& ws, std::span<float> logits,
                             const ParallelContext& parallel, transport::Deadline deadline) const;
  void attention(int64_t il, const Batch& batch, engine::KvCache& cache, LlamaWorkspace& ws,
                 kernels::ThreadPool& pool) const;

  LlamaConfig config_;
  LlamaConfig local_;
  partition::RankShard shard_;
  std::unique_ptr<WeightStore> store_;
  LlamaWeights weights_;
};

}  // namespace tandem::model
