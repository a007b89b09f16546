#include "runtime/engine/engine.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "runtime/model/llama_workspace.h"

namespace tandem::engine {

Engine::~Engine() = default;

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(const EngineOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (options.n_threads < 0 || options.n_threads > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("threads: ", options.n_threads, " is out of range"));
  }
  if (options.max_sequences <= 0 || options.max_batch_tokens <= 0 || options.context_length < 0) {
    return absl::InvalidArgumentError("sequences, batch tokens and context must be positive");
  }
  std::unique_ptr<Engine> e(new Engine());
  TANDEM_ASSIGN_OR_RETURN(gguf::File file, gguf::File::Open(options.model_path));
  e->file_ = std::make_unique<gguf::File>(std::move(file));
  // The hyper-parameters and the tokenizer are checked before any weight is read.
  TANDEM_ASSIGN_OR_RETURN(model::LlamaConfig config, model::LlamaConfig::FromGguf(*e->file_));
  TANDEM_ASSIGN_OR_RETURN(e->tokenizer_, tokenizer::Tokenizer::FromGguf(*e->file_));
  if (e->tokenizer_->n_vocab() != config.n_vocab) {
    return absl::InvalidArgumentError(absl::StrCat(options.model_path, ": the tokenizer has ",
                                                   e->tokenizer_->n_vocab(),
                                                   " tokens, the embedding ", config.n_vocab));
  }
  e->context_length_ = options.context_length > 0 ? options.context_length : config.context_length;
  e->max_batch_tokens_ = std::min(options.max_batch_tokens, e->context_length_);

  KvCacheConfig kv;
  kv.n_layers = config.n_layers;
  kv.n_kv_heads = config.n_kv_heads;
  kv.head_dim = config.head_dim;
  kv.max_sequences = options.max_sequences;
  kv.max_seq_len = e->context_length_;
  TANDEM_ASSIGN_OR_RETURN(KvCache cache, KvCache::Create(kv));
  e->cache_ = std::make_unique<KvCache>(std::move(cache));

  TANDEM_ASSIGN_OR_RETURN(e->model_, model::LlamaModel::Load(*e->file_, {options.use_mmap}));
  const int n_threads = options.n_threads > 0
                            ? options.n_threads
                            : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  e->pool_ = std::make_unique<kernels::ThreadPool>(n_threads);
  TANDEM_ASSIGN_OR_RETURN(e->workspace_, e->model_->make_workspace(e->max_batch_tokens_,
                                                                   e->context_length_, n_threads));
  e->logits_.resize(static_cast<size_t>(e->max_batch_tokens_) * config.n_vocab);
  e->load_seconds_ =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return e;
}

absl::StatusOr<std::span<const float>> Engine::forward(const model::Batch& batch) {
  TANDEM_RETURN_IF_ERROR(model_->forward(batch, *cache_, *workspace_, *pool_, logits_));
  int64_t n_out = 0;
  for (int64_t i = 0; i < batch.size(); ++i) n_out += batch.wants_logits(i) ? 1 : 0;
  return std::span<const float>(logits_.data(), n_out * config().n_vocab);
}

}  // namespace tandem::engine
