#include "launcher/serve/request_conversion.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tandem::launcher::serve {

absl::StatusOr<engine::SequenceRequest> to_sequence_request(const v1::GenerateRequest& request,
                                                            const tokenizer::Tokenizer& tokenizer,
                                                            const ModelLimits& limits,
                                                            uint64_t random_seed) {
  engine::SequenceRequest out;
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText:
      if (request.text().empty()) return absl::InvalidArgumentError("prompt.text: empty");
      out.prompt = tokenizer.encode(request.text(), {.add_bos = !request.no_bos(),
                                                     .parse_special = request.parse_special()});
      if (out.prompt.empty()) {
        return absl::InvalidArgumentError("prompt.text: tokenizes to no tokens");
      }
      break;
    case v1::GenerateRequest::kTokenIds:
      if (request.token_ids().ids().empty()) {
        return absl::InvalidArgumentError("prompt.token_ids: empty");
      }
      out.prompt.assign(request.token_ids().ids().begin(), request.token_ids().ids().end());
      break;
    case v1::GenerateRequest::PROMPT_NOT_SET:
      return absl::InvalidArgumentError("prompt: set text or token_ids");
  }
  if (request.request_id().size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("request_id: ", request.request_id().size(),
                                                   " bytes, at most ", kMaxRequestIdBytes));
  }
  out.id = request.request_id();
  const int64_t room = limits.context_length - static_cast<int64_t>(out.prompt.size());
  out.max_tokens = request.has_max_tokens()
                       ? request.max_tokens()
                       : static_cast<int32_t>(std::clamp<int64_t>(room, 0, kDefaultMaxTokens));

  const v1::SamplingParams& s = request.sampling();
  engine::SamplingParams& p = out.sampling;
  if (s.has_temperature()) p.temperature = s.temperature();
  if (s.has_top_k()) p.top_k = s.top_k();
  if (s.has_top_p()) p.top_p = s.top_p();
  if (s.has_min_p()) p.min_p = s.min_p();
  if (s.has_repeat_penalty()) p.repeat_penalty = s.repeat_penalty();
  if (s.has_frequency_penalty()) p.frequency_penalty = s.frequency_penalty();
  if (s.has_presence_penalty()) p.presence_penalty = s.presence_penalty();
  if (s.has_repeat_last_n()) p.repeat_last_n = s.repeat_last_n();
  p.seed = s.has_seed() ? s.seed() : random_seed;

  out.stop.assign(request.stop().begin(), request.stop().end());
  out.stop_at_eog = !request.ignore_eos();
  TANDEM_RETURN_IF_ERROR(engine::validate(out, limits.n_vocab, limits.context_length));
  return out;
}

v1::Finished to_finished(const engine::SequenceResult& result, uint64_t seed) {
  v1::Finished f;
  switch (result.reason) {
    case engine::StopReason::kEndOfGeneration:
      f.set_reason(v1::FINISH_REASON_STOP);
      break;
    case engine::StopReason::kStopString:
      f.set_reason(v1::FINISH_REASON_STOP_STRING);
      f.set_stop_string(result.stop_string);
      break;
    default:
      f.set_reason(v1::FINISH_REASON_LENGTH);
      break;
  }
  v1::Usage* u = f.mutable_usage();
  u->set_prompt_tokens(result.prompt_tokens);
  u->set_completion_tokens(result.completion_tokens);
  u->set_queue_seconds(result.queue_seconds);
  u->set_prompt_seconds(result.prompt_seconds);
  u->set_decode_seconds(result.decode_seconds);
  f.set_seed(seed);
  return f;
}

absl::Status stream_status(const engine::SequenceResult& result) {
  switch (result.reason) {
    case engine::StopReason::kEndOfGeneration:
    case engine::StopReason::kStopString:
    case engine::StopReason::kLength:
      return absl::OkStatus();
    case engine::StopReason::kCancelled:
    case engine::StopReason::kDeadline:
    case engine::StopReason::kAborted:
      break;
  }
  if (!result.status.ok()) return result.status;
  return absl::InternalError("the request ended without a reason");
}

}  // namespace tandem::launcher::serve
