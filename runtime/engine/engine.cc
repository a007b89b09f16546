#include "runtime/engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
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
  absl::Status local = e->open_model(options);
  if (local.ok()) local = e->load_local(options);
  local = e->finish_streaming(local, transport::deadline_in(options.load_timeout));
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

absl::Status Engine::open_model(const EngineOptions& options) {
  comm_ = options.comm;
  const std::string& path = options.model_path;
  if (comm_ == nullptr || comm_->size() == 1) {
    TANDEM_ASSIGN_OR_RETURN(gguf::File file, gguf::File::Open(path));
    file_ = std::make_unique<gguf::File>(std::move(file));
    return absl::OkStatus();
  }
  // Every rank says whether the file is on its box, whatever its options, so
  // that the cluster's collectives stay in step.
  enum : uint8_t { kHere = 1, kStream = 2, kMissing = 3 };
  std::error_code ec;
  const bool here = std::filesystem::is_regular_file(path, ec);
  const uint8_t mine = here ? kHere : options.stream_missing_model ? kStream : kMissing;
  std::vector<uint8_t> where(comm_->size());
  const transport::Deadline deadline = transport::deadline_in(options.load_timeout);
  TANDEM_RETURN_IF_ERROR(
      comm_->all_gather(&mine, where.data(), 1, transport::DataType::kU8, deadline));
  const int rank = comm_->rank();
  if (rank == 0) {
    absl::StatusOr<gguf::File> file =
        here ? gguf::File::Open(path)
             : absl::NotFoundError(absl::StrCat(path, " is not on rank 0's box"));
    if (file.ok()) file_ = std::make_unique<gguf::File>(std::move(*file));
    std::vector<int> fetchers;
    for (int r = 1; r < comm_->size(); ++r) {
      if (where[r] == kStream) fetchers.push_back(r);
    }
    if (!fetchers.empty()) {
      if (file.ok()) {
        std::fprintf(stderr, "tandem/engine: rank 0: streaming %s to %zu rank(s) without a copy\n",
                     path.c_str(), fetchers.size());
      }
      TANDEM_ASSIGN_OR_RETURN(stream_server_,
                              ModelStreamServer::Start(*comm_, file_.get(), file.status(),
                                                       std::move(fetchers), deadline));
    }
    return file.status();
  }
  if (mine == kMissing) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  if (mine == kHere) {
    TANDEM_ASSIGN_OR_RETURN(gguf::File file, gguf::File::Open(path));
    file_ = std::make_unique<gguf::File>(std::move(file));
    return absl::OkStatus();
  }
  streams_model_ = true;  // rank 0 waits for this rank's "done" from now on
  if (where[0] != kHere) {
    return absl::NotFoundError(absl::StrCat(path, " is on neither rank ", rank,
                                            "'s box nor rank 0's: nothing to stream it from"));
  }
  std::fprintf(stderr, "tandem/engine: rank %d: %s is not on this box: streaming its shard from rank 0\n",
               rank, path.c_str());
  TANDEM_ASSIGN_OR_RETURN(gguf::File file, open_streamed_model(*comm_, path, deadline));
  file_ = std::make_unique<gguf::File>(std::move(file));
  return absl::OkStatus();
}

absl::Status Engine::finish_streaming(absl::Status local, transport::Deadline deadline) {
  if (stream_server_ != nullptr) {
    absl::Status served = stream_server_->finish(deadline);
    if (served.ok() && file_ != nullptr) {
      std::fprintf(stderr, "tandem/engine: rank 0: streamed %.1f MB of the model to other ranks\n",
                   static_cast<double>(stream_server_->bytes_sent()) / 1e6);
    }
    stream_server_.reset();
    if (local.ok()) local = served;
  }
  if (streams_model_) {
    absl::Status done = finish_streamed_model(*comm_, deadline);
    if (local.ok() && model_ != nullptr) {
      std::fprintf(stderr, "tandem/engine: rank %d: streamed %.1f MB from rank 0 in %.2f s\n",
                   comm_->rank(), static_cast<double>(model_->load_stats().bytes) / 1e6,
                   model_->load_stats().seconds);
    }
    if (local.ok()) local = done;
  }
  return local;
}

absl::Status Engine::load_local(const EngineOptions& options) {
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

  const int n_threads = options.n_threads > 0
                            ? options.n_threads
                            : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) /
                                              std::max(1, options.ranks_on_this_box));
  pool_ = std::make_unique<kernels::ThreadPool>(n_threads);
  // A streamed file has nothing to map. The compute threads pack the weights.
  model::LoadOptions load;
  load.use_mmap = options.use_mmap && !file_->is_remote();
  load.pack_pool = pool_.get();
  TANDEM_ASSIGN_OR_RETURN(model_, model::LlamaModel::Load(*file_, load, shard));
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
