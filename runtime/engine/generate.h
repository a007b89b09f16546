// A single sequence's generation loop: the prompt in chunks of the engine's
// batch size, then one decode step per token, sampled, until an end-of-
// generation token, max_tokens, or the caller says stop.
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/sampler.h"

namespace tandem::engine {

struct GenerateRequest {
  std::vector<int32_t> prompt;  // token ids, BOS included when wanted
  int32_t max_tokens = 128;
  SamplingParams sampling;
  int32_t seq = 0;              // KV cache slot
  bool stop_at_eog = true;
  // When set, receives the logits of every prompt position, then of every
  // generated step but the last: [n_prompt + n_generated - 1][n_vocab].
  std::vector<float>* logits_out = nullptr;
};

enum class FinishReason { kStop, kLength, kCancelled };
std::string_view finish_reason_name(FinishReason reason);

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (an end-of-generation token is not included)
  FinishReason finish = FinishReason::kLength;
  int64_t prompt_tokens = 0;
  double prompt_seconds = 0;
  double decode_seconds = 0;  // from the first sampled token to the last
};

// on_token is called with each generated token as soon as it is sampled;
// returning false stops generation (kCancelled).
absl::StatusOr<GenerateResult> generate(Engine& engine, const GenerateRequest& request,
                                        const std::function<bool(int32_t token)>& on_token);

}  // namespace tandem::engine
