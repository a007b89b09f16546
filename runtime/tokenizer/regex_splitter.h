// Splits text into pre-tokens with a chain of regular expressions, the way
// llama.cpp's unicode_regex_split does: each pattern splits every piece left
// by the previous one; text between matches becomes a piece of its own.
// Patterns run under PCRE2 with UTF and Unicode properties. `\s` and `\S` in a
// pattern mean llama.cpp's whitespace set (Unicode White_Space), which differs
// from PCRE2's own \s (it has U+0085).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem::tokenizer {

struct Piece {
  size_t offset = 0;  // bytes
  size_t length = 0;
};

class RegexSplitter {
 public:
  static absl::StatusOr<std::unique_ptr<RegexSplitter>> Create(
      const std::vector<std::string>& patterns);
  ~RegexSplitter();
  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;

  // `text` must be valid UTF-8. Replaces `pieces` with the split, in order,
  // covering all of `text`. Thread-safe.
  void split(std::string_view text, std::vector<Piece>& pieces) const;

 private:
  struct Compiled;
  RegexSplitter() = default;
  std::vector<std::unique_ptr<Compiled>> patterns_;
};

}  // namespace tandem::tokenizer
