// Between the wire and the scheduler, as pure functions (tested without a
// server): a GenerateRequest becomes a validated engine::SequenceRequest, and
// a SequenceResult becomes the stream's Finished message or its error status.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "runtime/engine/sequence_request.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tandem/v1/inference.pb.h"

namespace tandem::launcher::serve {

// Tokens generated when max_tokens is unset (capped by what the context leaves).
inline constexpr int32_t kDefaultMaxTokens = 128;
inline constexpr size_t kMaxRequestIdBytes = 128;

struct ModelLimits {
  int32_t n_vocab = 0;
  int64_t context_length = 0;
};

// INVALID_ARGUMENT naming the field for anything the engine cannot run: no
// prompt, an empty one, unknown token ids, a prompt beyond the context,
// negative or absurd sampling values, max_tokens past the context, bad stop
// strings. `random_seed` is the seed when the request sets none.
absl::StatusOr<engine::SequenceRequest> to_sequence_request(const v1::GenerateRequest& request,
                                                            const tokenizer::Tokenizer& tokenizer,
                                                            const ModelLimits& limits,
                                                            uint64_t random_seed);

// The Finished message of a request that completed (reason kEndOfGeneration,
// kStopString or kLength).
v1::Finished to_finished(const engine::SequenceResult& result, uint64_t seed);

// OK for a completed request; otherwise the status the stream ends with
// (CANCELLED, DEADLINE_EXCEEDED, or why the server aborted it).
absl::Status stream_status(const engine::SequenceResult& result);

}  // namespace tandem::launcher::serve
