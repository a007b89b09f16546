// libFuzzer target for the serving front's request conversion: any byte
// string off the wire either fails to parse as a GenerateRequest, is refused
// with INVALID_ARGUMENT, or becomes a SequenceRequest that the scheduler can
// run (non-empty prompt of valid ids that fits the context with max_tokens).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "launcher/serve/request_conversion.h"
#include "runtime/gguf/gguf.h"

namespace {

using tandem::launcher::serve::ModelLimits;

const tandem::tokenizer::Tokenizer& vocab() {
  static std::unique_ptr<tandem::tokenizer::Tokenizer> t = [] {
    auto file = tandem::gguf::File::Open(TANDEM_TEST_DATA_DIR "/tokenizer/vocab-llama2.gguf");
    if (!file.ok()) std::abort();
    auto tok = tandem::tokenizer::Tokenizer::FromGguf(*file);
    if (!tok.ok()) std::abort();
    return std::move(*tok);
  }();
  return *t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tandem::v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  const ModelLimits limits{vocab().n_vocab(), 256};
  auto out = tandem::launcher::serve::to_sequence_request(request, vocab(), limits, 1);
  if (!out.ok()) {
    if (out.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  if (out->prompt.empty() || out->max_tokens < 0 ||
      static_cast<int64_t>(out->prompt.size()) + out->max_tokens > limits.context_length) {
    std::abort();
  }
  for (int32_t id : out->prompt) {
    if (id < 0 || id >= limits.n_vocab) std::abort();
  }
  if (!tandem::engine::validate(out->sampling).ok()) std::abort();
  return 0;
}
