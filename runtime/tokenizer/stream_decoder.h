// Streams detokenized text while tokens arrive, for printing generations.
#pragma once

#include <cstdint>
#include <string>

namespace tandem::tokenizer {

class Tokenizer;

// Streams text while tokens arrive: emits only complete UTF-8 sequences and
// holds back a partial one, so a character split over byte tokens is never
// printed broken. Bytes that can never complete a sequence come out as U+FFFD
// at once, so the output is always valid UTF-8. The pieces are
// token_to_piece's: no leading-space strip and no space clean-up, which suits
// a continuation of a prompt.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& t, bool render_special = false)
      : tokenizer_(t), render_special_(render_special) {}

  std::string push(int32_t id);
  // What is left (an unfinished sequence becomes U+FFFD per byte); resets.
  std::string flush();

 private:
  const Tokenizer& tokenizer_;
  bool render_special_;
  std::string pending_;
};

}  // namespace tandem::tokenizer
