// One rank's engine: the model (or this rank's shard of it), its tokenizer,
// the KV cache, the thread pool and every buffer a forward pass needs, planned
// at load time. The engine runs batches that mix sequences; generation loops
// and schedulers sit on top.
//
// Distributed, every rank of a TP x PP layout loads an Engine over the same
// communicator. Rank 0 drives: its forward(), open_sequence() and
// close_sequence() reach every rank, which take part from run_worker(), and
// its forward() returns the whole logits. Every exchange has a deadline; a
// lost peer makes the engine unusable (UNAVAILABLE) rather than hang.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/engine/kv_cache.h"
#include "runtime/engine/model_stream.h"
#include "runtime/gguf/gguf.h"
#include "runtime/kernels/cpu/thread_pool.h"
#include "runtime/model/batch.h"
#include "partition/world.h"
#include "runtime/model/llama.h"
#include "runtime/tokenizer/tokenizer.h"
#include "transport/communicator.h"

namespace tandem::engine {

struct StepCommand;  // step_command.h

struct EngineOptions {
  std::string model_path;
  int n_threads = 0;               // 0: one per core (the box's cores shared by its ranks)
  int64_t context_length = 0;      // 0: the model's own
  int32_t max_sequences = 1;       // KV cache slots
  int64_t max_batch_tokens = 512;  // largest forward batch
  bool use_mmap = false;           // map the file instead of owning the weights
  DType kv_type = DType::kF16;     // of the KV cache: kF16 or kF32

  // Distributed: this rank's communicator over all tp * pp ranks (null: one
  // rank alone), which must outlive the engine.
  transport::Communicator* comm = nullptr;
  int tp = 1;
  int pp = 1;
  // Layer ranges of the stages (empty: as even as possible).
  std::vector<partition::Range> stages;
  // Ranks sharing this box's memory. Before it allocates anything, a rank
  // refuses to load when its weights, KV cache and logits would exceed its
  // share of the memory available now (on a GB10, running out of unified
  // memory freezes the box rather than fail an allocation).
  int ranks_on_this_box = 1;
  bool check_memory = true;
  std::chrono::milliseconds step_timeout{60000};   // bounds the exchanges of one step
  std::chrono::milliseconds load_timeout{600000};  // bounds waiting for the other ranks to load
  // A rank whose model_path is not on its box streams the header and its
  // shard's bytes (only those) from rank 0, which must have the file; off,
  // such a rank fails to load (NOT_FOUND).
  bool stream_missing_model = true;
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

  const partition::World& world() const { return world_; }
  const model::LlamaModel& model() const { return *model_; }
  bool distributed() const { return comm_ != nullptr; }
  // Seconds this rank has spent exchanging data with the others during
  // forward passes (waiting for them included), since load.
  double sync_seconds() const;

  // Driver calls (rank 0, or the only rank).
  absl::Status open_sequence(int32_t seq);
  absl::Status close_sequence(int32_t seq);

  // Runs `batch` and returns the logits of the tokens that want them,
  // [n_outputs][n_vocab], valid until the next call.
  absl::StatusOr<std::span<const float>> forward(const model::Batch& batch);

  // Ranks other than 0: takes part in every step rank 0 drives until rank 0
  // shuts the workers down (OK), `stop` turns true (CANCELLED), or a peer is
  // lost (UNAVAILABLE, DEADLINE_EXCEEDED).
  absl::Status run_worker(const std::atomic<bool>* stop = nullptr);
  // Rank 0: tells the workers to return from run_worker(). The destructor
  // does it too; afterwards the engine is unusable.
  absl::Status shutdown_workers();

 private:
  Engine() = default;
  // Opens model_path, or on a rank without a copy, rank 0's over the
  // communicator (rank 0 then serves it while it loads).
  absl::Status open_model(const EngineOptions& options);
  absl::Status load_local(const EngineOptions& options);
  // Ends the streaming of the model (rank 0 waits for its fetchers, a fetcher
  // says it is done); `local` is this rank's load so far.
  absl::Status finish_streaming(absl::Status local, transport::Deadline deadline);
  absl::Status check_memory(const partition::ModelDims& dims, const partition::RankShard& shard,
                            const KvCacheConfig& kv) const;
  absl::Status agree_on_load(absl::Status local, transport::Deadline deadline);
  absl::Status broadcast_command(const StepCommand& command, const model::Batch* batch);
  absl::Status run_forward(const model::Batch& batch);
  absl::Status usable() const;

  transport::Communicator* comm_ = nullptr;
  std::unique_ptr<transport::Communicator> tp_comm_;
  partition::World world_;
  model::ParallelContext parallel_;
  absl::Status broken_;  // set once an exchange failed: the ranks' states may differ
  bool workers_stopped_ = false;
  // Worker-side copies of the batch rank 0 sent.
  std::vector<int32_t> step_tokens_, step_positions_, step_seq_ids_;
  std::vector<uint8_t> step_want_;
  std::vector<uint8_t> payload_;  // a large batch's arrays on the wire
  std::string report_text_;

  EngineOptions options_;
  std::unique_ptr<gguf::File> file_;
  std::unique_ptr<ModelStreamServer> stream_server_;  // rank 0, while others fetch
  bool streams_model_ = false;                        // this rank fetches from rank 0
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
