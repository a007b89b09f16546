#include "runtime/testing/test_vocab.h"

#include <cstddef>
#include <limits>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/testing/bpe_trainer.h"
#include "runtime/testing/corpus.h"

namespace tandem::testing {
namespace {

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

bool is_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
bool is_punct(char c) { return !is_letter(c) && !is_digit(c) && !is_space(c); }

// The lowercase string number `index` among those of length `len` ("a".."z", "aa"..).
std::string letters(size_t len, size_t index) {
  std::string s(len, 'a');
  for (size_t i = len; i-- > 0;) {
    s[i] = static_cast<char>('a' + index % 26);
    index /= 26;
  }
  return s;
}

// SentencePiece-style chunks: split at whitespace, then between letter runs,
// single digits (Llama splits digits) and punctuation runs; the first chunk
// of each word carries the space marker.
std::vector<std::vector<std::string>> spm_chunks(std::string_view text) {
  std::vector<std::vector<std::string>> out;
  size_t i = 0;
  while (i < text.size()) {
    if (is_space(text[i])) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < text.size() && !is_space(text[end])) ++end;
    bool first = true;
    for (size_t j = i; j < end;) {
      size_t k = j + 1;
      if (is_letter(text[j])) {
        while (k < end && is_letter(text[k])) ++k;
      } else if (is_punct(text[j])) {
        while (k < end && is_punct(text[k])) ++k;
      }
      std::vector<std::string> symbols;
      if (first) {
        if (is_digit(text[j])) {
          out.push_back({std::string(kSpmSpace)});
        } else {
          symbols.emplace_back(kSpmSpace);
        }
        first = false;
      }
      for (size_t m = j; m < k; ++m) symbols.emplace_back(1, text[m]);
      out.push_back(std::move(symbols));
      j = k;
    }
    i = end;
  }
  return out;
}

// An ASCII approximation of the llama-bpe pre-tokenizer regex: contractions,
// an optional leading non-letter plus a letter run, up to three digits,
// an optional space plus punctuation, and whitespace runs.
std::vector<std::string> bpe_pieces(std::string_view text) {
  std::vector<std::string> out;
  size_t i = 0;
  const size_t n = text.size();
  auto starts_with_ci = [&](size_t at, std::string_view s) {
    if (at + s.size() > n) return false;
    for (size_t k = 0; k < s.size(); ++k) {
      char c = text[at + k];
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      if (c != s[k]) return false;
    }
    return true;
  };
  while (i < n) {
    const char c = text[i];
    size_t k = i + 1;
    bool done = false;
    if (c == '\'') {
      for (std::string_view s : {"'re", "'ve", "'ll", "'s", "'t", "'m", "'d"}) {
        if (starts_with_ci(i, s)) {
          k = i + s.size();
          done = true;
          break;
        }
      }
    }
    if (done) {
    } else if (is_letter(c) ||
               (c != '\n' && c != '\r' && !is_digit(c) && i + 1 < n && is_letter(text[i + 1]))) {
      while (k < n && is_letter(text[k])) ++k;
    } else if (is_digit(c)) {
      while (k < n && k < i + 3 && is_digit(text[k])) ++k;
    } else if (is_punct(c) || (c == ' ' && i + 1 < n && is_punct(text[i + 1]))) {
      if (c == ' ') ++k;
      while (k < n && is_punct(text[k])) ++k;
      while (k < n && (text[k] == '\n' || text[k] == '\r')) ++k;
    } else if (c == '\n' || c == '\r') {
      while (k < n && (text[k] == '\n' || text[k] == '\r')) ++k;
    } else {
      // A run of spaces leaves its last one to the word that follows.
      while (k < n && text[k] == ' ') ++k;
      if (k < n && k - i > 1 && !is_space(text[k])) --k;
    }
    out.emplace_back(text.substr(i, k - i));
    i = k;
  }
  return out;
}

std::vector<std::vector<std::string>> bpe_chunks(std::string_view text) {
  std::vector<std::vector<std::string>> out;
  for (const std::string& piece : bpe_pieces(text)) {
    std::vector<std::string> symbols;
    for (char c : piece) symbols.push_back(byte_to_unicode(static_cast<uint8_t>(c)));
    out.push_back(std::move(symbols));
  }
  return out;
}

// Accumulates unique tokens.
class Builder {
 public:
  explicit Builder(TestVocab& v) : v_(v) {}
  bool has(const std::string& text) const { return seen_.count(text) > 0; }
  bool add(const std::string& text, float score, int32_t type) {
    if (!seen_.insert(text).second) return false;
    v_.tokens.push_back(text);
    v_.scores.push_back(score);
    v_.token_types.push_back(type);
    return true;
  }
  int64_t size() const { return static_cast<int64_t>(v_.tokens.size()); }

 private:
  TestVocab& v_;
  std::set<std::string> seen_;
};

absl::StatusOr<TestVocab> build_spm(int64_t n_vocab) {
  constexpr int64_t kFixed = 3 + 256 + 1 + 94;
  if (n_vocab < kFixed) {
    return absl::InvalidArgumentError(
        absl::StrCat("spm vocabulary needs n_vocab >= ", kFixed, ", got ", n_vocab));
  }
  TestVocab v;
  v.model = "llama";
  v.unk_id = 0;
  v.bos_id = 1;
  v.eos_id = 2;
  v.add_bos = true;
  v.add_space_prefix = true;
  Builder b(v);
  b.add("<unk>", 0.0f, kTokenUnknown);
  b.add("<s>", 0.0f, kTokenControl);
  b.add("</s>", 0.0f, kTokenControl);
  for (int byte = 0; byte < 256; ++byte) b.add(absl::StrFormat("<0x%02X>", byte), 0.0f, kTokenByte);
  b.add(std::string(kSpmSpace), 0.0f, kTokenNormal);
  for (char c = 0x21; c < 0x7F; ++c) b.add(std::string(1, c), 0.0f, kTokenNormal);

  // Learned pieces score -(rank), so llama.cpp's SentencePiece merge loop,
  // which prefers the highest score, applies them in training order.
  int64_t rank = 0;
  const auto merges =
      learn_merges(count_words(spm_chunks(kTrainingText)), static_cast<size_t>(n_vocab));
  for (const LearnedMerge& m : merges) {
    if (b.size() == n_vocab) break;
    ++rank;
    b.add(m.left + m.right, -static_cast<float>(rank), kTokenNormal);
  }
  // Synthetic pieces "▁wa", "▁wb", ..., "▁waa", ...: each extends one that exists.
  const std::string stem = std::string(kSpmSpace) + "w";
  if (b.size() < n_vocab && !b.has(stem)) b.add(stem, -static_cast<float>(++rank), kTokenNormal);
  for (size_t len = 1; b.size() < n_vocab; ++len) {
    size_t count = 1;
    for (size_t k = 0; k < len; ++k) count *= 26;
    for (size_t idx = 0; idx < count && b.size() < n_vocab; ++idx) {
      const std::string piece = stem + letters(len, idx);
      if (!b.has(piece)) b.add(piece, -static_cast<float>(++rank), kTokenNormal);
    }
  }
  return v;
}

absl::StatusOr<TestVocab> build_bpe(int64_t n_vocab) {
  static constexpr std::string_view kControls[] = {"<|begin_of_text|>", "<|end_of_text|>",
                                                   "<|eot_id|>"};
  constexpr int64_t kFixed = 256 + 3;
  if (n_vocab < kFixed) {
    return absl::InvalidArgumentError(
        absl::StrCat("bpe vocabulary needs n_vocab >= ", kFixed, ", got ", n_vocab));
  }
  TestVocab v;
  v.model = "gpt2";
  v.pre = "llama-bpe";
  v.add_bos = true;
  Builder b(v);
  for (int byte = 0; byte < 256; ++byte) {
    b.add(byte_to_unicode(static_cast<uint8_t>(byte)), 0.0f, kTokenNormal);
  }
  const int64_t n_regular = n_vocab - 3;
  // Every merge's result is a token and both sides are tokens, which is what
  // llama.cpp's BPE loader requires.
  const auto merges =
      learn_merges(count_words(bpe_chunks(kTrainingText)), static_cast<size_t>(n_vocab));
  for (const LearnedMerge& m : merges) {
    if (b.size() == n_regular) break;
    b.add(m.left + m.right, 0.0f, kTokenNormal);
    v.merges.push_back(absl::StrCat(m.left, " ", m.right));
  }
  const std::string space = byte_to_unicode(' ');
  const std::string stem = space + "w";
  if (b.size() < n_regular && !b.has(stem)) {
    b.add(stem, 0.0f, kTokenNormal);
    v.merges.push_back(absl::StrCat(space, " w"));
  }
  for (size_t len = 1; b.size() < n_regular; ++len) {
    size_t count = 1;
    for (size_t k = 0; k < len; ++k) count *= 26;
    for (size_t idx = 0; idx < count && b.size() < n_regular; ++idx) {
      const std::string tail = letters(len, idx);
      const std::string piece = stem + tail;
      if (b.has(piece)) continue;
      b.add(piece, 0.0f, kTokenNormal);
      v.merges.push_back(absl::StrCat(stem, tail.substr(0, len - 1), " ", tail.substr(len - 1)));
    }
  }
  for (std::string_view c : kControls) b.add(std::string(c), 0.0f, kTokenControl);
  v.bos_id = static_cast<int32_t>(n_vocab - 3);
  v.eos_id = static_cast<int32_t>(n_vocab - 1);
  v.scores.clear();  // llama.cpp's BPE vocabularies carry no scores
  return v;
}

}  // namespace

std::string byte_to_unicode(uint8_t byte) {
  const bool printable =
      (byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) || (byte >= 0xAE);
  if (printable) return utf8(byte);
  // The rest map to 256, 257, ... in byte order.
  uint32_t n = 0;
  for (uint32_t b = 0; b < byte; ++b) {
    const bool p = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    if (!p) ++n;
  }
  return utf8(256 + n);
}

absl::StatusOr<TestVocab> build_test_vocab(std::string_view kind, int64_t n_vocab) {
  if (n_vocab > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("n_vocab ", n_vocab, " does not fit int32"));
  }
  if (kind == "spm") return build_spm(n_vocab);
  if (kind == "bpe") return build_bpe(n_vocab);
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown vocabulary '", absl::string_view(kind.data(), kind.size()), "': want spm or bpe"));
}

void add_vocab_metadata(const TestVocab& v, gguf::Writer& w) {
  using gguf::Value;
  w.set("tokenizer.ggml.model", Value::str(v.model));
  if (!v.pre.empty()) w.set("tokenizer.ggml.pre", Value::str(v.pre));
  w.set("tokenizer.ggml.tokens", Value::string_array(v.tokens));
  if (!v.scores.empty()) w.set("tokenizer.ggml.scores", Value::f32_array(v.scores));
  w.set("tokenizer.ggml.token_type", Value::i32_array(v.token_types));
  if (!v.merges.empty()) w.set("tokenizer.ggml.merges", Value::string_array(v.merges));
  w.set("tokenizer.ggml.bos_token_id", Value::u32(static_cast<uint32_t>(v.bos_id)));
  w.set("tokenizer.ggml.eos_token_id", Value::u32(static_cast<uint32_t>(v.eos_id)));
  if (v.unk_id >= 0) {
    w.set("tokenizer.ggml.unknown_token_id", Value::u32(static_cast<uint32_t>(v.unk_id)));
  }
  w.set("tokenizer.ggml.add_bos_token", Value::boolean(v.add_bos));
  w.set("tokenizer.ggml.add_eos_token", Value::boolean(false));
  if (v.model == "llama") {
    w.set("tokenizer.ggml.add_space_prefix", Value::boolean(v.add_space_prefix));
  }
}

}  // namespace tandem::testing
