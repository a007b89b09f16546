// Byte-level BPE (llama.cpp's llm_tokenizer_bpe, GGUF tokenizer.ggml.model
// "gpt2"): regex pre-tokenization, GPT-2 byte-to-unicode mapping, then merges
// applied lowest rank first within each pre-token.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "runtime/tokenizer/regex_splitter.h"
#include "runtime/tokenizer/vocab.h"

namespace tandem::tokenizer {

class BpeEncoder {
 public:
  // `merges` are "left right" strings; the index is the rank. `vocab` must
  // outlive the encoder.
  static absl::StatusOr<std::unique_ptr<BpeEncoder>> Create(
      const Vocab& vocab, const std::vector<std::string_view>& merges,
      const std::vector<std::string>& regexes, bool ignore_merges);

  // Appends the tokens of `text` (raw bytes; invalid UTF-8 is handled as
  // llama.cpp does, as U+FFFD) to `out`.
  void encode(std::string_view text, std::vector<int32_t>& out) const;

  size_t n_merges() const { return merges_.size(); }

 private:
  struct Merge {
    int32_t rank;
    int32_t result;  // piece id of left + right
  };

  BpeEncoder(const Vocab& vocab, bool ignore_merges)
      : vocab_(vocab), ignore_merges_(ignore_merges) {}
  // Piece ids: a token's id for token texts, vocab size and up for texts that
  // occur only in merges; -1 for anything else.
  int32_t find_piece(std::string_view text) const;
  int32_t intern_piece(std::string_view text);
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  const Vocab& vocab_;
  const bool ignore_merges_;
  std::unique_ptr<RegexSplitter> splitter_;
  std::deque<std::string> extra_pieces_;  // deque: views into it stay valid
  absl::flat_hash_map<std::string_view, int32_t> extra_piece_ids_;
  absl::flat_hash_map<uint64_t, Merge> merges_;  // key: left << 32 | right
};

}  // namespace tandem::tokenizer
