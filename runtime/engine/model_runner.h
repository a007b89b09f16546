// What the scheduler needs from an engine: the tokenizer, the limits, the
// sequence slots and one forward step over a mixed batch. An Engine fits
// through EngineRunner, single-rank or as rank 0 of a distributed one (whose
// forward() drives the workers).
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "runtime/engine/engine.h"
#include "runtime/model/batch.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tandem::engine {

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  virtual const tokenizer::Tokenizer& tokenizer() const = 0;
  virtual int32_t n_vocab() const = 0;
  virtual int64_t context_length() const = 0;
  virtual int64_t max_batch_tokens() const = 0;
  // KV cache slots: sequence ids are [0, max_sequences).
  virtual int32_t max_sequences() const = 0;
  virtual absl::Status open_sequence(int32_t seq) = 0;
  // Distributed, this reaches every rank and can fail like a forward pass.
  virtual absl::Status close_sequence(int32_t seq) = 0;
  // The logits of the batch's tokens that want them, [n_outputs][n_vocab],
  // valid until the next call.
  virtual absl::StatusOr<std::span<const float>> forward(const model::Batch& batch) = 0;
};

// An Engine as a ModelRunner. The engine must outlive it; max_sequences is
// the EngineOptions::max_sequences it was loaded with.
class EngineRunner final : public ModelRunner {
 public:
  EngineRunner(Engine& engine, int32_t max_sequences)
      : engine_(engine), max_sequences_(max_sequences) {}
  const tokenizer::Tokenizer& tokenizer() const override { return engine_.tokenizer(); }
  int32_t n_vocab() const override { return static_cast<int32_t>(engine_.config().n_vocab); }
  int64_t context_length() const override { return engine_.context_length(); }
  int64_t max_batch_tokens() const override { return engine_.max_batch_tokens(); }
  int32_t max_sequences() const override { return max_sequences_; }
  absl::Status open_sequence(int32_t seq) override { return engine_.open_sequence(seq); }
  absl::Status close_sequence(int32_t seq) override { return engine_.close_sequence(seq); }
  absl::StatusOr<std::span<const float>> forward(const model::Batch& batch) override {
    return engine_.forward(batch);
  }

 private:
  Engine& engine_;
  int32_t max_sequences_;
};

}  // namespace tandem::engine
