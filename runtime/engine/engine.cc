#include "runtime/engine/engine.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "runtime/engine/step_command.h"
#include "runtime/model/llama_workspace.h"

namespace tandem::engine {

Engine::~Engine() {
  if (comm_ != nullptr && world_.rank() == 0 && !workers_stopped_) {
    shutdown_workers().IgnoreError();  // best effort: the workers also notice a lost peer
  }
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(const EngineOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  std::unique_ptr<Engine> e(new Engine());
  e->options_ = options;
  absl::Status local = e->load_local(options);
  if (options.comm != nullptr) {
    // Every rank learns whether every other rank loaded, so that none waits
    // for a step from a cluster that will never serve.
    TANDEM_RETURN_IF_ERROR(
        e->agree_on_load(local, transport::deadline_in(options.load_timeout)));
  } else {
    TANDEM_RETURN_IF_ERROR(local);
  }
  e->load_seconds_ =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return e;
}

absl::Status Engine::load_local(const EngineOptions& options) {
  comm_ = options.comm;
  if (options.n_threads < 0 || options.n_threads > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("threads: ", options.n_threads, " is out of range"));
  }
  if (options.max_sequences <= 0 || options.max_batch_tokens <= 0 || options.context_length < 0) {
    return absl::InvalidArgumentError("sequences, batch tokens and context must be positive");
  }
  if (comm_ != nullptr) {
    if (options.tp * options.pp != comm_->size()) {
      return absl::InvalidArgumentError(absl::StrCat("layout tp ", options.tp, " x pp ", options.pp,
                                                     " needs ", options.tp * options.pp,
                                                     " ranks; the cluster has ", comm_->size()));
    }
    TANDEM_ASSIGN_OR_RETURN(world_, partition::World::Create(options.tp, options.pp, comm_->rank()));
  } else if (options.tp != 1 || options.pp != 1) {
    return absl::InvalidArgumentError(absl::StrCat("layout tp ", options.tp, " x pp ", options.pp,
                                                   " needs a communicator"));
  }
  TANDEM_ASSIGN_OR_RETURN(gguf::File file, gguf::File::Open(options.model_path));
  file_ = std::make_unique<gguf::File>(std::move(file));
  // The hyper-parameters, the tokenizer and the layout are checked before any
  // weight is read.
  TANDEM_ASSIGN_OR_RETURN(model::LlamaConfig config, model::LlamaConfig::FromGguf(*file_));
  TANDEM_ASSIGN_OR_RETURN(tokenizer_, tokenizer::Tokenizer::FromGguf(*file_));
  if (tokenizer_->n_vocab() != config.n_vocab) {
    return absl::InvalidArgumentError(absl::StrCat(options.model_path, ": the tokenizer has ",
                                                   tokenizer_->n_vocab(), " tokens, the embedding ",
                                                   config.n_vocab));
  }
  TANDEM_ASSIGN_OR_RETURN(
      partition::RankShard shard,
      partition::make_rank_shard(model::model_dims(config, *file_), world_, options.stages));
  context_length_ = options.context_length > 0 ? options.context_length : config.context_length;
  max_batch_tokens_ = std::min(options.max_batch_tokens, context_length_);

  KvCacheConfig kv;
  kv.n_layers = shard.layers.size();
  kv.n_kv_heads = shard.kv_heads.size();
  kv.head_dim = config.head_dim;
  kv.max_sequences = options.max_sequences;
  kv.max_seq_len = context_length_;
  kv.type = options.kv_type;
  if (options.check_memory) {
    TANDEM_RETURN_IF_ERROR(check_memory(model::model_dims(config, *file_), shard, kv));
  }
  TANDEM_ASSIGN_OR_RETURN(KvCache cache, KvCache::Create(kv));
  cache_ = std::make_unique<KvCache>(std::move(cache));

  TANDEM_ASSIGN_OR_RETURN(model_, model::LlamaModel::Load(*file_, {options.use_mmap}, shard));
  const int n_threads = options.n_threads > 0
                            ? options.n_threads
                            : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  pool_ = std::make_unique<kernels::ThreadPool>(n_threads);
  TANDEM_ASSIGN_OR_RETURN(workspace_,
                          model_->make_workspace(max_batch_tokens_, context_length_, n_threads,
                                                  kv.block_size));
  if (world_.rank() == 0 || shard.has_head) {
    logits_.resize(static_cast<size_t>(max_batch_tokens_) * config.n_vocab);
  }
  if (comm_ != nullptr) {
    parallel_.world = comm_;
    parallel_.n_stages = world_.pp();
    parallel_.prev_stage = world_.prev_stage_rank();
    parallel_.next_stage = world_.next_stage_rank();
    parallel_.timeout = options.step_timeout;
    if (world_.tp() > 1) {
      const std::vector<int> group = world_.tp_group();
      TANDEM_ASSIGN_OR_RETURN(tp_comm_, comm_->split(group, 1 + world_.pp_rank()));
      parallel_.tp_group = tp_comm_.get();
    }
    step_tokens_.resize(max_batch_tokens_);
    step_positions_.resize(max_batch_tokens_);
    step_seq_ids_.resize(max_batch_tokens_);
    step_want_.resize(max_batch_tokens_);
    payload_.resize(step_payload_bytes(max_batch_tokens_));
  }
  return absl::OkStatus();
}

double Engine::sync_seconds() const { return workspace_->sync_seconds; }

namespace {

// MemAvailable of /proc/meminfo in bytes; 0 when unknown.
uint64_t memory_available() {
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  uint64_t kib = 0;
  while (in >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

std::string gib(uint64_t bytes) { return absl::StrFormat("%.2f GiB", bytes / 1073741824.0); }

}  // namespace

absl::Status Engine::check_memory(const partition::ModelDims& dims,
                                  const partition::RankShard& shard, const KvCacheConfig& kv) const {
  uint64_t weights = 0;
  const bool tied = file_->find_tensor("output.weight") == nullptr;
  for (const partition::TensorShard& t : partition::tensor_shards(dims, shard, tied)) {
    const gguf::TensorInfo* info = file_->find_tensor(t.name);
    if (info == nullptr) continue;  // the loader names what is missing
    weights += row_bytes(info->type, t.cols.size()) * static_cast<uint64_t>(t.rows.size());
  }
  const uint64_t cache = KvCache::bytes_for(kv);
  const uint64_t logits = sizeof(float) * static_cast<uint64_t>(max_batch_tokens_) * dims.n_vocab;
  const uint64_t need = weights + cache + logits;
  const uint64_t available = memory_available();
  const int sharing = std::max(1, options_.ranks_on_this_box);
  if (available == 0 || need <= available / sharing) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "rank ", world_.rank(), " needs ", gib(need), " (weights ", gib(weights), ", KV cache ",
      gib(cache), " for ", kv.max_sequences, " x ", kv.max_seq_len, " positions, logits ",
      gib(logits), ") but this box has ", gib(available), " available",
      sharing > 1 ? absl::StrCat(" for its ", sharing, " ranks") : std::string(),
      "; use more ranks or boxes, a shorter --context or fewer sequences (see tandem plan)"));
}

absl::Status Engine::usable() const {
  if (!broken_.ok()) {
    return absl::UnavailableError(
        absl::StrCat("the engine lost its cluster: ", broken_.ToString()));
  }
  if (comm_ != nullptr && world_.rank() != 0) {
    return absl::FailedPreconditionError("only rank 0 drives a distributed engine");
  }
  return absl::OkStatus();
}

absl::Status Engine::open_sequence(int32_t seq) {
  TANDEM_RETURN_IF_ERROR(usable());
  TANDEM_RETURN_IF_ERROR(cache_->open_sequence(seq));
  if (comm_ == nullptr) return absl::OkStatus();
  StepCommand command;
  command.op = static_cast<uint32_t>(StepOp::kOpenSequence);
  command.seq = seq;
  return broadcast_command(command, nullptr);
}

absl::Status Engine::close_sequence(int32_t seq) {
  TANDEM_RETURN_IF_ERROR(usable());
  cache_->close_sequence(seq);
  if (comm_ == nullptr) return absl::OkStatus();
  StepCommand command;
  command.op = static_cast<uint32_t>(StepOp::kCloseSequence);
  command.seq = seq;
  return broadcast_command(command, nullptr);
}

absl::StatusOr<std::span<const float>> Engine::forward(const model::Batch& batch) {
  TANDEM_RETURN_IF_ERROR(usable());
  if (comm_ != nullptr) {
    // Bad input is refused here, before any rank hears of the step.
    TANDEM_RETURN_IF_ERROR(model_->validate(batch, *cache_, *workspace_));
    StepCommand command;
    command.op = static_cast<uint32_t>(StepOp::kForward);
    command.n_tokens = static_cast<int32_t>(batch.size());
    command.has_want = batch.want_logits.empty() ? 0 : 1;
    TANDEM_RETURN_IF_ERROR(broadcast_command(command, &batch));
  }
  TANDEM_RETURN_IF_ERROR(run_forward(batch));
  const int64_t n_out = batch.n_outputs();
  return std::span<const float>(logits_.data(), n_out * config().n_vocab);
}

}  // namespace tandem::engine
