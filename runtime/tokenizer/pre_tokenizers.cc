#include "runtime/tokenizer/pre_tokenizers.h"

namespace tandem::tokenizer {
namespace {

// Regexes as llama.cpp writes them (tokenizer.json's, with the case-insensitive
// group spelled out).
constexpr const char* kLlama3Regex =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2Regex =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kGpt2Regex =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";

struct Entry {
  std::vector<std::string_view> names;
  PreTokenizerSpec spec;
};

const std::vector<Entry>& entries() {
  static const std::vector<Entry> kEntries = {
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"},
       {{kLlama3Regex}, /*ignore_merges=*/true, /*clean_spaces=*/true, /*add_bos=*/true}},
      {{"dbrx", "smaug-bpe"}, {{kLlama3Regex}, false, true, false}},
      {{"gpt-2", "phi-2", "mpt", "olmo", "jais", "exaone4"}, {{kGpt2Regex}, false, true, false}},
      {{"qwen2", "deepseek-r1-qwen"}, {{kQwen2Regex}, false, false, false}},
      {{"megrez"}, {{kQwen2Regex}, false, true, false}},
      // llama.cpp's LLAMA_VOCAB_PRE_TYPE_DEFAULT: four passes.
      {{"default", ""},
       {{"[\\p{P}\\$\\+<=>\\^~\\|]+", kGpt2Regex, "\\p{N}+", "[0-9][0-9][0-9]"},
        false,
        true,
        false}},
  };
  return kEntries;
}

}  // namespace

const PreTokenizerSpec* find_pre_tokenizer(std::string_view name) {
  for (const Entry& entry : entries()) {
    for (const std::string_view candidate : entry.names) {
      if (candidate == name) return &entry.spec;
    }
  }
  return nullptr;
}

}  // namespace tandem::tokenizer
