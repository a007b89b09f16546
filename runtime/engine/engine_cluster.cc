// The distributed half of the engine: rank 0 sends each step to the other
// ranks, which run it from run_worker(); every rank reports its load to every
// other. Input errors (a bad batch, a full cache) are found identically on
// every rank, so they leave the cluster in step; any other failure of an
// exchange leaves the ranks' states apart, and the engine refuses further work.
#include <algorithm>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/step_command.h"
#include "runtime/model/llama_workspace.h"

namespace tandem::engine {
namespace {

// How long a worker polls for the next step before it sleeps between polls.
constexpr auto kBusyPoll = std::chrono::milliseconds(20);
constexpr auto kIdleSleep = std::chrono::microseconds(200);

bool is_input_error(const absl::Status& s) {
  return absl::IsInvalidArgument(s) || absl::IsOutOfRange(s) || absl::IsResourceExhausted(s);
}

// FNV-1a of what must be equal for two ranks to hold shards of one model.
uint64_t fingerprint(const gguf::File& file) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](const void* data, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      h ^= static_cast<const uint8_t*>(data)[i];
      h *= 1099511628211ull;
    }
  };
  const uint64_t size = file.file_size();
  mix(&size, sizeof size);
  for (const gguf::TensorInfo& t : file.tensors()) {
    mix(t.name.data(), t.name.size());
    mix(&t.type, sizeof t.type);
    mix(&t.file_offset, sizeof t.file_offset);
    mix(t.dims.data(), t.dims.size() * sizeof(int64_t));
  }
  return h;
}

void copy_batch_arrays(const model::Batch& b, int32_t* tokens, int32_t* positions,
                       int32_t* seq_ids, uint8_t* want) {
  const size_t n = static_cast<size_t>(b.size());
  std::copy_n(b.tokens.data(), n, tokens);
  std::copy_n(b.positions.data(), n, positions);
  std::copy_n(b.seq_ids.data(), n, seq_ids);
  if (b.want_logits.empty()) {
    std::fill_n(want, n, uint8_t{0});
  } else {
    std::copy_n(b.want_logits.data(), n, want);
  }
}

}  // namespace

absl::Status Engine::agree_on_load(absl::Status local, transport::Deadline deadline) {
  LoadReport mine;
  mine.code = static_cast<int32_t>(local.code());
  if (local.ok()) {
    mine.fingerprint = fingerprint(*file_);
    mine.weight_bytes = model_->weight_bytes();
    mine.kv_bytes = cache_->bytes();
  } else {
    const std::string text(local.message());
    std::memcpy(mine.message, text.data(), std::min(text.size(), sizeof mine.message - 1));
  }
  std::vector<LoadReport> all(comm_->size());
  absl::Status gathered = comm_->all_gather(&mine, all.data(), sizeof(LoadReport),
                                            transport::DataType::kU8, deadline);
  TANDEM_RETURN_IF_ERROR(local);
  if (!gathered.ok()) {
    return absl::Status(gathered.code(), absl::StrCat("waiting for every rank to load: ",
                                                      gathered.message()));
  }
  for (int r = 0; r < comm_->size(); ++r) {
    const LoadReport& report = all[r];
    if (report.code != 0) {
      report_text_ = std::string(report.message, strnlen(report.message, sizeof report.message));
      return absl::Status(static_cast<absl::StatusCode>(report.code),
                          absl::StrCat("rank ", r, " failed to load: ", report_text_));
    }
    if (report.fingerprint != mine.fingerprint) {
      return absl::FailedPreconditionError(
          absl::StrCat("rank ", r, " loaded a different model file than rank ",
                       comm_->rank(), " (", options_.model_path, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status Engine::broadcast_command(const StepCommand& command_in, const model::Batch* batch) {
  StepCommand command = command_in;
  size_t payload = 0;
  if (batch != nullptr) {
    const int64_t n = batch->size();
    if (n <= kInlineTokens) {
      copy_batch_arrays(*batch, command.tokens, command.positions, command.seq_ids, command.want);
    } else {
      auto* p = reinterpret_cast<int32_t*>(payload_.data());
      copy_batch_arrays(*batch, p, p + n, p + 2 * n, payload_.data() + 12 * n);
      payload = step_payload_bytes(n);
    }
  }
  const transport::Deadline deadline = transport::deadline_in(options_.step_timeout);
  absl::Status st;
  for (int r = 1; r < comm_->size() && st.ok(); ++r) {
    st = comm_->send(&command, sizeof command, r, kStepTag, deadline);
    if (st.ok() && payload > 0) st = comm_->send(payload_.data(), payload, r, kPayloadTag, deadline);
  }
  if (!st.ok()) broken_ = st;
  return st;
}

absl::Status Engine::run_forward(const model::Batch& batch) {
  absl::Status st = model_->forward(batch, *cache_, *workspace_, *pool_, logits_, parallel_);
  if (st.ok() && comm_ != nullptr && world_.pp() > 1) {
    // The last stage's first TP rank hands the gathered logits to rank 0.
    const int64_t n_out = batch.n_outputs();
    const size_t bytes = sizeof(float) * n_out * config().n_vocab;
    const int last = world_.rank_of(world_.pp() - 1, 0);
    const transport::Deadline deadline = transport::deadline_in(options_.step_timeout);
    const model::SyncTimer timer(workspace_->sync_seconds);
    if (n_out > 0 && world_.rank() == 0) {
      st = comm_->recv(logits_.data(), bytes, last, kLogitsTag, deadline);
    } else if (n_out > 0 && world_.rank() == last) {
      st = comm_->send(logits_.data(), bytes, 0, kLogitsTag, deadline);
    }
  }
  if (!st.ok() && comm_ != nullptr && !is_input_error(st)) broken_ = st;
  return st;
}

absl::Status Engine::run_worker(const std::atomic<bool>* stop) {
  if (comm_ == nullptr || world_.rank() == 0) {
    return absl::FailedPreconditionError("run_worker is for the ranks other than 0");
  }
  TANDEM_RETURN_IF_ERROR(broken_);
  auto malformed = [&](const std::string& what) {
    broken_ = absl::DataLossError(absl::StrCat("rank ", world_.rank(), ": rank 0 sent ", what));
    return broken_;
  };
  StepCommand command;
  for (;;) {
    TANDEM_ASSIGN_OR_RETURN(auto request, comm_->irecv(&command, sizeof command, 0, kStepTag));
    // The next step usually follows at once: poll for a while, then back off
    // to short sleeps so that an idle cluster does not burn its cores, and
    // wake up now and then to honour `stop`.
    const auto idle_since = transport::Clock::now();
    for (;;) {
      const bool fresh = transport::Clock::now() - idle_since < kBusyPoll;
      absl::Status st = request->wait(
          transport::deadline_in(fresh ? std::chrono::milliseconds(1) : std::chrono::milliseconds(0)));
      if (st.ok()) break;
      if (!absl::IsDeadlineExceeded(st)) {
        broken_ = absl::Status(st.code(), absl::StrCat("rank ", world_.rank(),
                                                       " lost rank 0: ", st.message()));
        return broken_;
      }
      if (stop != nullptr && stop->load()) return absl::CancelledError("the worker was stopped");
      if (!fresh) std::this_thread::sleep_for(kIdleSleep);
    }
    if (command.magic != kStepMagic) return malformed("a step without the magic number");
    switch (static_cast<StepOp>(command.op)) {
      case StepOp::kShutdown:
        return absl::OkStatus();
      case StepOp::kOpenSequence:
      case StepOp::kCloseSequence: {
        if (command.seq < 0 || command.seq >= cache_->config().max_sequences) {
          return malformed(absl::StrCat("sequence ", command.seq));
        }
        if (static_cast<StepOp>(command.op) == StepOp::kCloseSequence) {
          cache_->close_sequence(command.seq);
          break;
        }
        absl::Status st = cache_->open_sequence(command.seq);
        if (!st.ok()) {
          broken_ = absl::InternalError(absl::StrCat("rank ", world_.rank(),
                                                     " could not open a sequence rank 0 opened: ",
                                                     st.message()));
          return broken_;
        }
        break;
      }
      case StepOp::kForward: {
        const int64_t n = command.n_tokens;
        if (n <= 0 || n > max_batch_tokens_) return malformed(absl::StrCat("a batch of ", n));
        if (n <= kInlineTokens) {
          std::copy_n(command.tokens, n, step_tokens_.data());
          std::copy_n(command.positions, n, step_positions_.data());
          std::copy_n(command.seq_ids, n, step_seq_ids_.data());
          std::copy_n(command.want, n, step_want_.data());
        } else {
          const absl::Status st =
              comm_->recv(payload_.data(), step_payload_bytes(n), 0, kPayloadTag,
                          transport::deadline_in(options_.step_timeout));
          if (!st.ok()) {
            broken_ = st;
            return st;
          }
          const auto* p = reinterpret_cast<const int32_t*>(payload_.data());
          std::copy_n(p, n, step_tokens_.data());
          std::copy_n(p + n, n, step_positions_.data());
          std::copy_n(p + 2 * n, n, step_seq_ids_.data());
          std::copy_n(payload_.data() + 12 * n, n, step_want_.data());
        }
        const size_t len = static_cast<size_t>(n);
        model::Batch batch{std::span<const int32_t>(step_tokens_).first(len),
                           std::span<const int32_t>(step_positions_).first(len),
                           std::span<const int32_t>(step_seq_ids_).first(len), {}};
        if (command.has_want != 0) batch.want_logits = std::span<const uint8_t>(step_want_).first(len);
        const absl::Status st = run_forward(batch);
        // Input errors happened on rank 0 too, which reports them; others end the worker.
        if (!st.ok() && !is_input_error(st)) return st;
        break;
      }
      default:
        return malformed(absl::StrCat("unknown step op ", command.op));
    }
  }
}

absl::Status Engine::shutdown_workers() {
  if (comm_ == nullptr || world_.rank() != 0 || workers_stopped_) return absl::OkStatus();
  workers_stopped_ = true;
  StepCommand command;
  command.op = static_cast<uint32_t>(StepOp::kShutdown);
  const transport::Deadline deadline = transport::deadline_in(std::chrono::milliseconds(2000));
  absl::Status first;
  for (int r = 1; r < comm_->size(); ++r) {
    absl::Status st = comm_->send(&command, sizeof command, r, kStepTag, deadline);
    if (first.ok()) first = st;
  }
  if (broken_.ok()) broken_ = absl::FailedPreconditionError("the workers were shut down");
  return first;
}

}  // namespace tandem::engine
