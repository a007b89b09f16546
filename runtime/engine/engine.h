// One rank's engine: the model, its tokenizer, the KV cache, the thread pool
// and every buffer a forward pass needs, planned at load time. The engine runs
// batches that mix sequences; generation loops and schedulers sit on top.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/engine/kv_cache.h"
#include "runtime/gguf/gguf.h"
#include "runtime/kernels/cpu/thread_pool.h"
#include "runtime/model/batch.h"
#include "runtime/model/llama.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tandem::engine {

struct EngineOptions {
  std::string model_path;
  int n_threads = 0;               // 0: one per core
  int64_t context_length = 0;      // 0: the model's own
  int32_t max_sequences = 1;       // KV cache slots
  int64_t max_batch_tokens = 512;  // largest forward batch
  bool use_mmap = false;           // map the file instead of owning the weights
};

class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Load(const EngineOptions& options);
  ~Engine();

  const model::LlamaConfig& config() const { return model_->config(); }
  const tokenizer::Tokenizer& tokenizer() const { return *tokenizer_; }
  const model::LoadStats& load_stats() const { return model_->load_stats(); }
  const gguf::File& file() const { return *file_; }
  int64_t context_length() const { return context_length_; }
  int64_t max_batch_tokens() const { return max_batch_tokens_; }
  int n_threads() const { return pool_->n_threads(); }
  double load_seconds() const { return load_seconds_; }

  absl::Status open_sequence(int32_t seq) { return cache_->open_sequence(seq); }
  void close_sequence(int32_t seq) { cache_->close_sequence(seq); }

  // Runs `batch` and returns the logits of the tokens that want them,
  // [n_outputs][n_vocab], valid until the next call.
  absl::StatusOr<std::span<const float>> forward(const model::Batch& batch);

 private:
  Engine() = default;

  std::unique_ptr<gguf::File> file_;
  std::unique_ptr<model::LlamaModel> model_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<kernels::ThreadPool> pool_;
  std::unique_ptr<model::LlamaWorkspace> workspace_;
  std::vector<float> logits_;  // [max_batch_tokens][n_vocab]
  int64_t context_length_ = 0;
  int64_t max_batch_tokens_ = 0;
  double load_seconds_ = 0;
};

}  // namespace tandem::engine
