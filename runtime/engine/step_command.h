// What rank 0 sends every other rank of a distributed engine before each step:
// a fixed-size command, with a decode batch's tokens inline, followed for
// larger batches by one payload message of the batch's arrays. Checked on
// receipt like any wire format, even though the peers were authenticated.
#pragma once

#include <cstdint>

namespace tandem::engine {

enum class StepOp : uint32_t { kForward = 1, kOpenSequence = 2, kCloseSequence = 3, kShutdown = 4 };

inline constexpr uint32_t kStepMagic = 0x54535450;  // "PTST"
inline constexpr uint32_t kStepTag = 0x5354;         // user tags of the world
inline constexpr uint32_t kPayloadTag = 0x5355;
inline constexpr uint32_t kLogitsTag = 0x5356;
inline constexpr uint32_t kLoadTag = 0x5357;
inline constexpr int kInlineTokens = 16;

struct StepCommand {
  uint32_t magic = kStepMagic;
  uint32_t op = 0;        // a StepOp
  int32_t n_tokens = 0;   // kForward: the batch size
  int32_t seq = 0;        // kOpenSequence, kCloseSequence
  uint32_t has_want = 0;  // kForward: whether want_logits was given (else: the last token's)
  uint32_t reserved = 0;
  int32_t tokens[kInlineTokens] = {};
  int32_t positions[kInlineTokens] = {};
  int32_t seq_ids[kInlineTokens] = {};
  uint8_t want[kInlineTokens] = {};
};
static_assert(sizeof(StepCommand) == 24 + 13 * kInlineTokens);

// Bytes of the payload message of an n-token batch (n > kInlineTokens):
// tokens, positions, seq_ids (int32 each), then want (uint8).
inline constexpr size_t step_payload_bytes(int64_t n) { return static_cast<size_t>(n) * 13; }

// What each rank reports after loading, gathered by every rank.
struct LoadReport {
  int32_t code = 0;          // absl::StatusCode
  uint32_t reserved = 0;
  uint64_t fingerprint = 0;  // of the model file's header, equal on every rank
  uint64_t weight_bytes = 0;
  uint64_t kv_bytes = 0;
  char message[224] = {};
};
static_assert(sizeof(LoadReport) == 256);

}  // namespace tandem::engine
