// A forward batch: tokens from one or more sequences, prefill chunks and
// decode steps mixed. Token i sits at positions[i] of sequence seq_ids[i].
#pragma once

#include <cstdint>
#include <span>

namespace tandem::model {

struct Batch {
  std::span<const int32_t> tokens;
  std::span<const int32_t> positions;
  std::span<const int32_t> seq_ids;
  // want_logits[i] != 0 asks for the logits after token i; an empty span asks
  // for the last token's only.
  std::span<const uint8_t> want_logits;

  int64_t size() const { return static_cast<int64_t>(tokens.size()); }
  bool wants_logits(int64_t i) const {
    return want_logits.empty() ? i + 1 == size() : want_logits[i] != 0;
  }
  // How many tokens want logits: the rows of the logits a forward returns.
  int64_t n_outputs() const {
    int64_t n = 0;
    for (int64_t i = 0; i < size(); ++i) n += wants_logits(i) ? 1 : 0;
    return n;
  }
};

}  // namespace tandem::model
