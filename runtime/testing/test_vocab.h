// Tokenizer vocabularies for generated test models: a SentencePiece-style
// ("llama") and a byte-level BPE ("gpt2", Llama 3 style) vocabulary of exactly
// the requested size, learned by a small BPE run on an embedded English text
// so that real text tokenizes into real multi-character pieces. Both are
// laid out the way llama.cpp expects them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/gguf/gguf.h"

namespace tandem::testing {

// GGUF token types (llama.cpp's llama_token_type).
inline constexpr int32_t kTokenNormal = 1;
inline constexpr int32_t kTokenUnknown = 2;
inline constexpr int32_t kTokenControl = 3;
inline constexpr int32_t kTokenByte = 6;

struct TestVocab {
  std::string model;  // tokenizer.ggml.model: "llama" or "gpt2"
  std::string pre;    // tokenizer.ggml.pre; empty for "llama"
  std::vector<std::string> tokens;
  std::vector<float> scores;  // "llama" only: -(merge rank) for learned pieces
  std::vector<int32_t> token_types;
  std::vector<std::string> merges;  // "gpt2" only: "left right", in rank order
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t unk_id = -1;  // -1: none
  bool add_bos = true;
  bool add_space_prefix = false;
};

// `kind` is "spm" or "bpe". InvalidArgument for another kind or an n_vocab
// too small to hold the fixed tokens (354 for spm, 259 for bpe).
absl::StatusOr<TestVocab> build_test_vocab(std::string_view kind, int64_t n_vocab);

// Writes the tokenizer.ggml.* keys.
void add_vocab_metadata(const TestVocab& vocab, gguf::Writer& writer);

// GPT-2's reversible byte -> printable code point map, as UTF-8.
std::string byte_to_unicode(uint8_t byte);

}  // namespace tandem::testing
