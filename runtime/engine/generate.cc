#include "runtime/engine/generate.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tandem::engine {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Closes the sequence's KV slot however generation ends.
class SequenceGuard {
 public:
  SequenceGuard(Engine& engine, int32_t seq) : engine_(engine), seq_(seq) {}
  ~SequenceGuard() { engine_.close_sequence(seq_).IgnoreError(); }

 private:
  Engine& engine_;
  int32_t seq_;
};

}  // namespace

std::string_view finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

absl::StatusOr<GenerateResult> generate(Engine& engine, const GenerateRequest& request,
                                        const std::function<bool(int32_t token)>& on_token) {
  const int64_t n_prompt = static_cast<int64_t>(request.prompt.size());
  const int64_t n_vocab = engine.config().n_vocab;
  if (n_prompt == 0) return absl::InvalidArgumentError("prompt: no tokens");
  if (request.max_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens: ", request.max_tokens, " < 0"));
  }
  if (n_prompt + request.max_tokens > engine.context_length()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt of ", n_prompt, " tokens plus max_tokens ", request.max_tokens,
        " exceeds the context length of ", engine.context_length()));
  }
  for (int32_t id : request.prompt) {
    if (id < 0 || id >= n_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("prompt: token id ", id,
                                                     " outside the vocabulary [0, ", n_vocab, ")"));
    }
  }
  TANDEM_RETURN_IF_ERROR(validate(request.sampling));
  TANDEM_RETURN_IF_ERROR(engine.open_sequence(request.seq));
  SequenceGuard guard(engine, request.seq);

  Sampler sampler(request.sampling, static_cast<int32_t>(n_vocab));
  for (int32_t id : request.prompt) sampler.accept(id);
  const bool all_logits = request.logits_out != nullptr;
  if (all_logits) {
    request.logits_out->clear();
    request.logits_out->reserve((n_prompt + std::max(0, request.max_tokens - 1)) * n_vocab);
  }

  GenerateResult result;
  result.prompt_tokens = n_prompt;
  result.tokens.reserve(request.max_tokens);
  if (request.max_tokens == 0) return result;

  // Prompt, in chunks. Buffers are sized once for the largest chunk.
  const int64_t chunk = engine.max_batch_tokens();
  std::vector<int32_t> positions(chunk), seqs(chunk, request.seq);
  std::vector<uint8_t> want(chunk, all_logits ? 1 : 0);
  std::span<const float> logits;
  const auto prompt_start = std::chrono::steady_clock::now();
  for (int64_t b = 0; b < n_prompt; b += chunk) {
    const int64_t n = std::min(chunk, n_prompt - b);
    for (int64_t i = 0; i < n; ++i) positions[i] = static_cast<int32_t>(b + i);
    want[n - 1] = (all_logits || b + n == n_prompt) ? 1 : 0;
    model::Batch batch{std::span(request.prompt).subspan(b, n), std::span(positions).first(n),
                       std::span(seqs).first(n), std::span(want).first(n)};
    TANDEM_ASSIGN_OR_RETURN(logits, engine.forward(batch));
    if (all_logits) request.logits_out->insert(request.logits_out->end(), logits.begin(), logits.end());
  }
  result.prompt_seconds = seconds_since(prompt_start);

  const auto decode_start = std::chrono::steady_clock::now();
  std::span<const float> last = logits.last(n_vocab);
  int32_t pos = static_cast<int32_t>(n_prompt);
  const uint8_t want_one = 1;
  while (true) {
    const int32_t token = sampler.sample(last);
    sampler.accept(token);
    if (request.stop_at_eog && engine.tokenizer().is_eog(token)) {
      result.finish = FinishReason::kStop;
      break;
    }
    result.tokens.push_back(token);
    if (!on_token(token)) {
      result.finish = FinishReason::kCancelled;
      break;
    }
    if (static_cast<int32_t>(result.tokens.size()) >= request.max_tokens) {
      result.finish = FinishReason::kLength;
      break;
    }
    model::Batch step{std::span(&token, 1), std::span(&pos, 1), std::span(&request.seq, 1),
                      std::span(&want_one, 1)};
    TANDEM_ASSIGN_OR_RETURN(last, engine.forward(step));
    if (all_logits) request.logits_out->insert(request.logits_out->end(), last.begin(), last.end());
    ++pos;
  }
  result.decode_seconds = seconds_since(decode_start);
  return result;
}

}  // namespace tandem::engine
