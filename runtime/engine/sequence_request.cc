#include "runtime/engine/sequence_request.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tandem::engine {

absl::Status validate(const SequenceRequest& r, int32_t n_vocab, int64_t context_length) {
  const int64_t n_prompt = static_cast<int64_t>(r.prompt.size());
  if (n_prompt == 0) return absl::InvalidArgumentError("prompt: empty (give text or token ids)");
  for (int64_t i = 0; i < n_prompt; ++i) {
    const int32_t id = r.prompt[i];
    if (id < 0 || id >= n_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("prompt: token id ", id, " at index ", i,
                                                     " is outside the vocabulary [0, ", n_vocab,
                                                     ")"));
    }
  }
  if (n_prompt > context_length) {
    return absl::InvalidArgumentError(absl::StrCat("prompt: ", n_prompt,
                                                   " tokens exceed the context length of ",
                                                   context_length));
  }
  if (r.max_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens: ", r.max_tokens, " is negative"));
  }
  if (n_prompt + r.max_tokens > context_length) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_tokens: ", r.max_tokens, " after a prompt of ", n_prompt,
        " tokens exceeds the context length of ", context_length, " (at most ",
        context_length - n_prompt, ")"));
  }
  TANDEM_RETURN_IF_ERROR(validate(r.sampling));
  if (r.stop.size() > static_cast<size_t>(kMaxStopStrings)) {
    return absl::InvalidArgumentError(
        absl::StrCat("stop: ", r.stop.size(), " stop strings, at most ", kMaxStopStrings));
  }
  for (size_t i = 0; i < r.stop.size(); ++i) {
    if (r.stop[i].empty()) return absl::InvalidArgumentError(absl::StrCat("stop[", i, "]: empty"));
    if (r.stop[i].size() > kMaxStopStringBytes) {
      return absl::InvalidArgumentError(absl::StrCat("stop[", i, "]: ", r.stop[i].size(),
                                                     " bytes, at most ", kMaxStopStringBytes));
    }
  }
  return absl::OkStatus();
}

}  // namespace tandem::engine
