#include "runtime/tokenizer/vocab.h"

#include <utility>

namespace tandem::tokenizer {

Vocab::Vocab(std::vector<TokenData> tokens) : tokens_(std::move(tokens)) {
  text_to_id_.reserve(tokens_.size());
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const auto [it, inserted] =
        text_to_id_.emplace(std::string_view(tokens_[i].text), static_cast<int32_t>(i));
    if (!inserted && first_duplicate_ < 0) first_duplicate_ = static_cast<int32_t>(i);
  }
}

}  // namespace tandem::tokenizer
