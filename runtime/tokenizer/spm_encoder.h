// SentencePiece-style BPE over a scored vocabulary (llama.cpp's
// llm_tokenizer_spm, GGUF tokenizer.ggml.model "llama"): characters merge into
// the highest-scoring adjacent vocabulary piece until none is left; what is
// not a piece falls back to <0xXX> byte tokens.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "runtime/tokenizer/vocab.h"

namespace tandem::tokenizer {

class SpmEncoder {
 public:
  // `vocab` must outlive the encoder. `unk_id` (or -1) stands in for a byte
  // with no token, where llama.cpp would throw.
  SpmEncoder(const Vocab& vocab, int32_t unk_id);

  // Appends the tokens of `text`, which the caller has already escaped
  // (spaces as U+2581, the space prefix added).
  void encode(std::string_view text, std::vector<int32_t>& out) const;

  // The token llama.cpp's byte_to_token gives for `byte`, or -1.
  int32_t byte_token(uint8_t byte) const { return byte_tokens_[byte]; }

 private:
  const Vocab& vocab_;
  std::array<int32_t, 256> byte_tokens_;
};

}  // namespace tandem::tokenizer
