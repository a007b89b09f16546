// The byte-level BPE pre-tokenizers this runtime knows, keyed by the GGUF
// tokenizer.ggml.pre name, with the settings llama.cpp ties to each.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tandem::tokenizer {

struct PreTokenizerSpec {
  std::vector<std::string> regexes;  // applied in order, see RegexSplitter
  bool ignore_merges = false;        // a pre-token that is a whole token skips BPE
  bool clean_spaces = true;          // clean_up_tokenization_spaces on decode
  bool add_bos = false;              // default when tokenizer.ggml.add_bos_token is absent
};

// nullptr for a name this runtime does not implement. An empty name (the key
// is absent) means "default", as in llama.cpp.
const PreTokenizerSpec* find_pre_tokenizer(std::string_view name);

}  // namespace tandem::tokenizer
