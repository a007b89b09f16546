// One generation request as the scheduler runs it, its validation against a
// model's limits, and how it ended. Kept apart from the scheduler so that the
// serving front (and its fuzzer) can check requests without an engine.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "runtime/engine/sampler.h"

namespace tandem::engine {

using SchedulerClock = std::chrono::steady_clock;

// Most stop strings per request, and their longest length in bytes.
inline constexpr int kMaxStopStrings = 16;
inline constexpr size_t kMaxStopStringBytes = 256;

struct SequenceRequest {
  std::vector<int32_t> prompt;  // token ids, BOS included when wanted
  int32_t max_tokens = 128;
  SamplingParams sampling;
  std::vector<std::string> stop;  // stop strings (see StopMatcher)
  bool stop_at_eog = true;
  SchedulerClock::time_point deadline = SchedulerClock::time_point::max();
  std::string id;  // the caller's label, for logs
};

// INVALID_ARGUMENT naming the field (by its API name: prompt, max_tokens,
// sampling parameter ..., stop) when `request` cannot run on a model with
// this vocabulary and context length.
absl::Status validate(const SequenceRequest& request, int32_t n_vocab, int64_t context_length);

enum class StopReason {
  kEndOfGeneration,  // the model produced an end-of-generation token
  kStopString,       // the text reached a stop string
  kLength,           // max_tokens generated
  kCancelled,        // the caller cancelled
  kDeadline,         // the request's deadline passed
  kAborted,          // the scheduler shut down, or the engine failed (see status)
};

struct SequenceResult {
  StopReason reason = StopReason::kLength;
  absl::Status status;      // not OK for kAborted (why), kCancelled and kDeadline
  std::string stop_string;  // for kStopString
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  double queue_seconds = 0;   // submit to admission
  double prompt_seconds = 0;  // admission to the first generated token
  double decode_seconds = 0;  // first generated token to the last
};

}  // namespace tandem::engine
