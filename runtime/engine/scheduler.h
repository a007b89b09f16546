// Serves many generation requests at once on one engine. One loop thread owns
// the engine: each step it admits new requests into free sequence slots,
// builds one batch from the decode tokens of the sequences that are
// generating and prefill chunks of those still reading their prompt, runs
// it, samples each sequence's next token with its own Sampler, and streams
// the tokens and their text (UTF-8-safe, stop strings held back) to the
// request's RequestStream. A request ends at an end-of-generation token, a
// stop string, max_tokens, its deadline, or when the caller cancels it (seen
// within one step; the slot is freed at once).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/engine/model_runner.h"
#include "runtime/engine/sampler.h"
#include "runtime/engine/sequence_request.h"

namespace tandem::engine {

// What arrived since the last read: tokens, their text, and the result once
// the request has ended.
struct StreamChunk {
  std::vector<int32_t> tokens;
  std::string text;
  std::optional<SequenceResult> result;
  void clear() {
    tokens.clear();
    text.clear();
    result.reset();
  }
};

// The channel between the scheduler's loop and one request's caller. Output
// accumulates until the caller reads it, so a slow reader gets bigger chunks
// rather than an ever-longer queue.
class RequestStream {
 public:
  // Waits until there is output or `until`; moves it into `out` (cleared
  // first) and returns true, or returns false on timeout.
  bool read(StreamChunk* out, SchedulerClock::time_point until);
  // Asks the loop to stop this request; it ends (kCancelled) within one step.
  void cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

 private:
  friend class Scheduler;
  void append(int32_t token, std::string_view text);
  void append_text(std::string_view text);
  void finish(SequenceResult result);

  std::mutex mu_;
  std::condition_variable cv_;
  StreamChunk pending_;
  bool finished_ = false;
  std::atomic<bool> cancelled_{false};
};

struct SchedulerStats {
  int32_t active = 0;  // admitted or waiting for admission
  int32_t max_sequences = 0;
  uint64_t requests_total = 0;  // ended, any outcome
  uint64_t tokens_generated_total = 0;
  bool accepting = true;
};

class Scheduler {
 public:
  // Starts the loop thread. `runner` must outlive the scheduler and is used
  // only from the loop thread from now on.
  explicit Scheduler(ModelRunner& runner);
  // Ends every request still running (kAborted) and joins the loop.
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a request. INVALID_ARGUMENT for a request that fails validate(),
  // RESOURCE_EXHAUSTED when every slot is taken, UNAVAILABLE after
  // stop_accepting().
  absl::StatusOr<std::shared_ptr<RequestStream>> submit(SequenceRequest request);

  // Refuses new requests from now on (draining); running ones continue.
  void stop_accepting();
  // Waits until no request runs or `until`; true when idle.
  bool wait_idle(SchedulerClock::time_point until);
  // Ends every running request with kAborted and `why`.
  void abort_all(const absl::Status& why);

  SchedulerStats stats() const;

 private:
  struct Sequence;
  void loop();
  void admit(std::deque<std::unique_ptr<Sequence>>& incoming);
  void end_sequence(Sequence& s, StopReason reason, absl::Status status);
  void retire_ended();
  bool build_batch();
  void sample_outputs(std::span<const float> logits);
  void emit_token(Sequence& s, int32_t token);

  ModelRunner& runner_;
  const int32_t n_vocab_;

  mutable std::mutex mu_;
  std::condition_variable cv_;       // wakes the loop: new request, abort, stop
  std::condition_variable idle_cv_;  // wakes wait_idle
  std::deque<std::unique_ptr<Sequence>> incoming_;
  int32_t n_reserved_ = 0;  // slots taken by incoming and running requests
  bool accepting_ = true;
  bool stopping_ = false;
  std::optional<absl::Status> abort_;
  uint64_t requests_total_ = 0;
  uint64_t tokens_total_ = 0;

  // Loop thread only.
  std::vector<std::unique_ptr<Sequence>> running_;
  std::vector<uint8_t> slot_used_;  // [max_sequences]
  // The step's batch, sized once for max_batch_tokens.
  std::vector<int32_t> batch_tokens_, batch_positions_, batch_seqs_;
  std::vector<uint8_t> batch_want_;
  std::vector<Sequence*> batch_owner_;  // per batch entry that wants logits, in order
  int64_t batch_size_ = 0;

  std::thread thread_;
};

}  // namespace tandem::engine
