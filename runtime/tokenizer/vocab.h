// The token table shared by the SentencePiece and byte-level BPE encoders:
// token texts, scores and llama.cpp-style attribute bits, plus a text -> id
// index. Internal to the tokenizer module.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace tandem::tokenizer {

// llama.cpp's llama_token_attr bits. Attributes are bits rather than the
// GGUF token type because llama.cpp ORs CONTROL onto tokens whose text looks
// like an end-of-generation marker.
enum TokenAttr : uint32_t {
  kAttrUndefined = 0,
  kAttrUnknown = 1u << 0,
  kAttrUnused = 1u << 1,
  kAttrNormal = 1u << 2,
  kAttrControl = 1u << 3,
  kAttrUserDefined = 1u << 4,
  kAttrByte = 1u << 5,
};

struct TokenData {
  std::string text;
  float score = 0.0f;
  uint32_t attr = kAttrNormal;
};

class Vocab {
 public:
  // Takes the tokens; builds the index. The index holds views into the
  // token strings, so the token vector is never resized afterwards.
  explicit Vocab(std::vector<TokenData> tokens);
  Vocab(const Vocab&) = delete;
  Vocab& operator=(const Vocab&) = delete;

  int32_t size() const { return static_cast<int32_t>(tokens_.size()); }
  bool valid(int32_t id) const { return id >= 0 && id < size(); }
  const TokenData& at(int32_t id) const { return tokens_[static_cast<size_t>(id)]; }
  TokenData& mutable_at(int32_t id) { return tokens_[static_cast<size_t>(id)]; }
  // -1 when `text` is not a token.
  int32_t find(std::string_view text) const {
    auto it = text_to_id_.find(text);
    return it == text_to_id_.end() ? -1 : it->second;
  }
  // Index of the first duplicate text, or -1 (the constructor keeps the first).
  int32_t first_duplicate() const { return first_duplicate_; }

 private:
  std::vector<TokenData> tokens_;
  absl::flat_hash_map<std::string_view, int32_t> text_to_id_;
  int32_t first_duplicate_ = -1;
};

}  // namespace tandem::tokenizer
