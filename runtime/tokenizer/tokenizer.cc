#include "runtime/tokenizer/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "runtime/tokenizer/bpe_encoder.h"
#include "runtime/tokenizer/pre_tokenizers.h"
#include "runtime/tokenizer/spm_encoder.h"
#include "runtime/tokenizer/unicode.h"
#include "runtime/tokenizer/vocab.h"

namespace tandem::tokenizer {
namespace {

constexpr char kKeyModel[] = "tokenizer.ggml.model";
constexpr char kKeyPre[] = "tokenizer.ggml.pre";
constexpr char kKeyTokens[] = "tokenizer.ggml.tokens";
constexpr char kKeyScores[] = "tokenizer.ggml.scores";
constexpr char kKeyTokenType[] = "tokenizer.ggml.token_type";
constexpr char kKeyMerges[] = "tokenizer.ggml.merges";
constexpr char kKeyAddBos[] = "tokenizer.ggml.add_bos_token";
constexpr char kKeyAddEos[] = "tokenizer.ggml.add_eos_token";
constexpr char kKeyAddSpacePrefix[] = "tokenizer.ggml.add_space_prefix";
constexpr char kKeyBosId[] = "tokenizer.ggml.bos_token_id";
constexpr char kKeyEosId[] = "tokenizer.ggml.eos_token_id";

constexpr std::string_view kSpaceEscape = "\xE2\x96\x81";  // U+2581

// Texts llama.cpp takes for an end-of-turn token when the file names none,
// in the order we prefer them (llama.cpp's pick among several is hash order).
constexpr std::string_view kEotTexts[] = {
    "<|eot_id|>",      "<|im_end|>", "<|end|>", "<end_of_turn>",      "<|endoftext|>",
    "<|end_of_text|>", "<EOT>",      "_<EOT>",  "<end_of_utterance>",
};
// Texts llama.cpp treats as end of generation wherever they appear.
constexpr std::string_view kEogTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",   "<|endoftext|>",      "</s>",
    "<|eom_id|>", "<EOT>",      "_<EOT>",  "<|end_of_text|>", "<end_of_utterance>",
};

uint32_t attr_from_type(int32_t type) {
  switch (static_cast<TokenType>(type)) {
    case TokenType::kNormal:
      return kAttrNormal;
    case TokenType::kUnknown:
      return kAttrUnknown;
    case TokenType::kControl:
      return kAttrControl;
    case TokenType::kUserDefined:
      return kAttrUserDefined;
    case TokenType::kUnused:
      return kAttrUnused;
    case TokenType::kByte:
      return kAttrByte;
    case TokenType::kUndefined:
      break;
  }
  return kAttrUndefined;
}

// llama.cpp's token_to_byte: strtol over the two characters after "<0x".
char byte_of_byte_token(std::string_view text) {
  int value = 0;
  for (size_t i = 3; i < std::min<size_t>(text.size(), 5); ++i) {
    const char c = text[i];
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else {
      break;
    }
    value = value * 16 + digit;
  }
  return static_cast<char>(value);
}

// llama.cpp's llama_decode_text: byte-level BPE text back to bytes.
std::string decode_byte_level(std::string_view text) {
  std::string out;
  for (uint32_t cpt : decode_utf8_lenient(text)) {
    if (cpt > 0x10FFFF) cpt = kReplacementChar;
    const int byte = unicode_to_byte(cpt);
    if (byte >= 0) {
      out.push_back(static_cast<char>(byte));
      continue;
    }
    std::string utf8;
    append_utf8(cpt, utf8);
    out += "[UNK_BYTE_0x";
    for (const char c : utf8) {
      char hex[3];
      std::snprintf(hex, sizeof(hex), "%02x", static_cast<uint8_t>(c));
      out += hex;
    }
    absl::StrAppend(&out, std::string(text), "]");
  }
  return out;
}

absl::Status get_optional_bool(const gguf::File& file, std::string_view key, bool& value) {
  if (file.find(key) == nullptr) return absl::OkStatus();
  TANDEM_ASSIGN_OR_RETURN(value, file.get_bool(key));
  return absl::OkStatus();
}

// llama.cpp drops a default id outside the vocabulary and ignores a stored id
// outside it (keeping the default); a value of the wrong type is an error here.
absl::Status get_optional_id(const gguf::File& file, std::string_view key, int32_t n_vocab,
                             int32_t& id) {
  if (id >= n_vocab) id = -1;
  if (file.find(key) == nullptr) return absl::OkStatus();
  TANDEM_ASSIGN_OR_RETURN(const uint32_t value, file.get_u32(key));
  if (value < static_cast<uint32_t>(n_vocab)) id = static_cast<int32_t>(value);
  return absl::OkStatus();
}

// Views of a string array's elements, without copying them (the merges
// run to hundreds of thousands of strings). `file` must outlive the views.
absl::StatusOr<std::vector<std::string_view>> string_array_views(const gguf::File& file,
                                                                 const char* key) {
  const gguf::Value* value = file.find(key);
  if (value == nullptr || value->type != gguf::ValueType::kArray ||
      value->elem_type != gguf::ValueType::kString) {
    // Let the typed getter word the error (missing key or wrong type).
    TANDEM_RETURN_IF_ERROR(file.get_string_array(key).status());
    return absl::InvalidArgumentError(absl::StrCat(key, " is not an array of strings"));
  }
  const auto& array = std::get<gguf::Value::Array>(value->data);
  std::vector<std::string_view> views;
  views.reserve(array.size());
  for (const gguf::Value& element : array) {
    const auto* text = std::get_if<std::string>(&element.data);
    if (text == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(key, " has a non-string element"));
    }
    views.emplace_back(*text);
  }
  return views;
}

absl::StatusOr<std::vector<float>> load_scores(const gguf::File& file, size_t n_tokens) {
  std::vector<float> scores(n_tokens, 0.0f);
  const gguf::Value* value = file.find(kKeyScores);
  if (value == nullptr) return scores;
  if (value->type == gguf::ValueType::kArray && value->elem_type == gguf::ValueType::kInt32) {
    TANDEM_ASSIGN_OR_RETURN(const std::vector<int32_t> ints, file.get_i32_array(kKeyScores));
    if (ints.size() < n_tokens) {
      return absl::InvalidArgumentError(
          absl::StrCat(kKeyScores, " has ", ints.size(), " entries for ", n_tokens, " tokens"));
    }
    for (size_t i = 0; i < n_tokens; ++i) scores[i] = static_cast<float>(ints[i]);
    return scores;
  }
  TANDEM_ASSIGN_OR_RETURN(std::vector<float> floats, file.get_f32_array(kKeyScores));
  if (floats.size() < n_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat(kKeyScores, " has ", floats.size(), " entries for ", n_tokens, " tokens"));
  }
  floats.resize(n_tokens);
  return floats;
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const gguf::File& file) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  TANDEM_ASSIGN_OR_RETURN(t->model_, file.get_string(kKeyModel));
  if (file.find(kKeyPre) != nullptr) {
    TANDEM_ASSIGN_OR_RETURN(t->pre_, file.get_string(kKeyPre));
  }

  const PreTokenizerSpec* pre_spec = nullptr;
  if (t->model_ == "llama") {
    t->kind_ = Kind::kSpm;
    t->bos_id_ = 1;
    t->eos_id_ = 2;
    t->unk_id_ = 0;
    t->add_bos_ = true;
    t->add_space_prefix_ = true;
    t->clean_spaces_ = false;
  } else if (t->model_ == "gpt2") {
    t->kind_ = Kind::kBpe;
    pre_spec = find_pre_tokenizer(t->pre_);
    if (pre_spec == nullptr) {
      return absl::UnimplementedError(absl::StrCat(kKeyPre, " = '", t->pre_, "' in ", file.path(),
                                                   " is not a pre-tokenizer Tandem implements"));
    }
    t->bos_id_ = 11;  // llama.cpp's defaults for BPE vocabularies
    t->eos_id_ = 11;
    t->add_bos_ = pre_spec->add_bos;
    t->add_space_prefix_ = false;
    t->clean_spaces_ = pre_spec->clean_spaces;
  } else {
    return absl::UnimplementedError(absl::StrCat(kKeyModel, " = '", t->model_, "' in ", file.path(),
                                                 " is not supported (only 'llama' and 'gpt2')"));
  }
  TANDEM_RETURN_IF_ERROR(get_optional_bool(file, kKeyAddSpacePrefix, t->add_space_prefix_));

  TANDEM_ASSIGN_OR_RETURN(std::vector<std::string> texts, file.get_string_array(kKeyTokens));
  if (texts.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(kKeyTokens, " in ", file.path(), " is empty"));
  }
  if (texts.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat(kKeyTokens, " has too many tokens"));
  }
  const size_t n_tokens = texts.size();
  TANDEM_ASSIGN_OR_RETURN(const std::vector<float> scores, load_scores(file, n_tokens));
  std::vector<int32_t> types;
  if (file.find(kKeyTokenType) != nullptr) {
    TANDEM_ASSIGN_OR_RETURN(types, file.get_i32_array(kKeyTokenType));
    if (types.size() < n_tokens) {
      return absl::InvalidArgumentError(
          absl::StrCat(kKeyTokenType, " has ", types.size(), " entries for ", n_tokens, " tokens"));
    }
  }
  std::vector<TokenData> tokens(n_tokens);
  for (size_t i = 0; i < n_tokens; ++i) {
    tokens[i].text = texts[i].empty() ? absl::StrCat("[EMPTY_", i, "]") : std::move(texts[i]);
    tokens[i].score = scores[i];
    tokens[i].attr = types.empty() ? kAttrNormal : attr_from_type(types[i]);
  }
  t->vocab_ = std::make_unique<Vocab>(std::move(tokens));
  if (const int32_t dup = t->vocab_->first_duplicate(); dup >= 0) {
    const std::string_view text = t->vocab_->at(dup).text;
    return absl::InvalidArgumentError(
        absl::StrCat(kKeyTokens, " in ", file.path(), " has duplicate token '", std::string(text),
                     "' at ids ", t->vocab_->find(text), " and ", dup));
  }

  if (t->kind_ == Kind::kBpe) {
    TANDEM_ASSIGN_OR_RETURN(const std::vector<std::string_view> merges,
                            string_array_views(file, kKeyMerges));
    TANDEM_ASSIGN_OR_RETURN(t->bpe_, BpeEncoder::Create(*t->vocab_, merges, pre_spec->regexes,
                                                        pre_spec->ignore_merges));
  }
  TANDEM_RETURN_IF_ERROR(t->LoadSpecialTokens(file));
  if (t->kind_ == Kind::kSpm) t->spm_ = std::make_unique<SpmEncoder>(*t->vocab_, t->unk_id_);
  t->FinishLoad();
  return t;
}

absl::Status Tokenizer::LoadSpecialTokens(const gguf::File& file) {
  const int32_t n = vocab_->size();
  TANDEM_RETURN_IF_ERROR(get_optional_id(file, kKeyBosId, n, bos_id_));
  TANDEM_RETURN_IF_ERROR(get_optional_id(file, kKeyEosId, n, eos_id_));
  TANDEM_RETURN_IF_ERROR(get_optional_id(file, "tokenizer.ggml.eot_token_id", n, eot_id_));
  TANDEM_RETURN_IF_ERROR(get_optional_id(file, "tokenizer.ggml.eom_token_id", n, eom_id_));
  TANDEM_RETURN_IF_ERROR(get_optional_id(file, "tokenizer.ggml.unknown_token_id", n, unk_id_));
  TANDEM_RETURN_IF_ERROR(get_optional_id(file, "tokenizer.ggml.padding_token_id", n, pad_id_));
  TANDEM_RETURN_IF_ERROR(get_optional_bool(file, kKeyAddBos, add_bos_));
  TANDEM_RETURN_IF_ERROR(get_optional_bool(file, kKeyAddEos, add_eos_));
  if (add_bos_ && bos_id_ < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(kKeyAddBos, " is true, but ", kKeyBosId, " is not set (or out of range)"));
  }
  if (add_eos_ && eos_id_ < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(kKeyAddEos, " is true, but ", kKeyEosId, " is not set (or out of range)"));
  }
  return absl::OkStatus();
}

void Tokenizer::FinishLoad() {
  const int32_t n = vocab_->size();
  // llama.cpp forces CONTROL onto tokens it recognises by text.
  const auto mark_control = [&](int32_t id) { vocab_->mutable_at(id).attr |= kAttrControl; };
  if (eot_id_ < 0) {
    for (const std::string_view text : kEotTexts) {
      if (const int32_t id = vocab_->find(text); id >= 0) {
        eot_id_ = id;
        mark_control(id);
        break;
      }
    }
  }
  if (eom_id_ < 0) {
    if (const int32_t id = vocab_->find("<|eom_id|>"); id >= 0) {
      eom_id_ = id;
      mark_control(id);
    }
  }
  eog_.assign(static_cast<size_t>(n), 0);
  for (const std::string_view text : kEogTexts) {
    if (const int32_t id = vocab_->find(text); id >= 0) {
      eog_[static_cast<size_t>(id)] = 1;
      mark_control(id);
    }
  }
  for (const int32_t id : {eos_id_, eot_id_, eom_id_}) {
    if (id >= 0) eog_[static_cast<size_t>(id)] = 1;
  }

  special_tokens_.clear();
  for (int32_t id = 0; id < n; ++id) {
    if (vocab_->at(id).attr & (kAttrControl | kAttrUserDefined | kAttrUnknown)) {
      special_tokens_.push_back(id);
    }
  }
  // Longest first, so that a special token containing another wins. llama.cpp
  // sorts unstably; ties keep id order here.
  std::stable_sort(special_tokens_.begin(), special_tokens_.end(), [&](int32_t a, int32_t b) {
    return vocab_->at(a).text.size() > vocab_->at(b).text.size();
  });

  pieces_.assign(static_cast<size_t>(n), std::string());
  for (int32_t id = 0; id < n; ++id) {
    const TokenData& token = vocab_->at(id);
    std::string& piece = pieces_[static_cast<size_t>(id)];
    if (token.attr & (kAttrUnknown | kAttrControl | kAttrUserDefined)) {
      piece = token.text;
    } else if (token.attr & kAttrNormal) {
      if (kind_ == Kind::kSpm) {
        const std::string_view text = token.text;
        for (size_t i = 0; i < text.size();) {
          if (text.substr(i, kSpaceEscape.size()) == kSpaceEscape) {
            piece.push_back(' ');
            i += kSpaceEscape.size();
          } else {
            piece.push_back(text[i++]);
          }
        }
      } else {
        piece = decode_byte_level(token.text);
      }
    } else if (token.attr & kAttrByte) {
      piece.assign(1, byte_of_byte_token(token.text));
    }
    // Undefined and unused tokens render as nothing, as in llama.cpp.
  }
}

void Tokenizer::partition(std::string_view text, bool parse_special,
                          std::vector<Fragment>& out) const {
  out.clear();
  out.push_back({-1, 0, text.size()});
  std::vector<Fragment> next;
  for (const int32_t id : special_tokens_) {
    const TokenData& token = vocab_->at(id);
    // Without parse_special only user-defined tokens are split out.
    if (!parse_special && (token.attr & (kAttrControl | kAttrUnknown))) continue;
    const std::string_view special = token.text;
    if (text.find(special) == std::string_view::npos) continue;
    next.clear();
    for (const Fragment& fragment : out) {
      if (fragment.token >= 0) {
        next.push_back(fragment);
        continue;
      }
      size_t offset = fragment.offset;
      size_t length = fragment.length;
      while (length > 0) {
        const size_t match = text.substr(0, offset + length).find(special, offset);
        if (match == std::string_view::npos) {
          next.push_back({-1, offset, length});
          break;
        }
        if (match > offset) next.push_back({-1, offset, match - offset});
        next.push_back({id, 0, 0});
        const size_t end = match + special.size();
        length = offset + length - end;
        offset = end;
      }
    }
    out.swap(next);
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, EncodeOptions options) const {
  std::vector<int32_t> out;
  std::vector<Fragment> fragments;
  if (!text.empty()) partition(text, options.parse_special, fragments);
  const bool add_special = options.add_bos;
  if (add_special && add_bos_) out.push_back(bos_id_);

  if (kind_ == Kind::kSpm) {
    std::string escaped;
    bool prev_special = true;  // the first text fragment gets the space prefix
    for (const Fragment& fragment : fragments) {
      if (fragment.token >= 0) {
        out.push_back(fragment.token);
        prev_special = true;
        continue;
      }
      escaped.clear();
      if (add_space_prefix_ && prev_special) escaped = kSpaceEscape;
      for (const char c : text.substr(fragment.offset, fragment.length)) {
        if (c == ' ') {
          escaped += kSpaceEscape;
        } else {
          escaped.push_back(c);
        }
      }
      spm_->encode(escaped, out);
      prev_special = false;
    }
  } else {
    for (const Fragment& fragment : fragments) {
      if (fragment.token >= 0) {
        out.push_back(fragment.token);
      } else {
        bpe_->encode(text.substr(fragment.offset, fragment.length), out);
      }
    }
  }

  if (add_special && add_eos_) out.push_back(eos_id_);
  return out;
}

void Tokenizer::append_piece(int32_t id, std::string& out, bool render_special) const {
  if (!is_valid(id)) return;
  if (!render_special && is_control(id)) return;
  out += pieces_[static_cast<size_t>(id)];
}

std::string Tokenizer::token_to_piece(int32_t id, bool render_special) const {
  std::string piece;
  append_piece(id, piece, render_special);
  return piece;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  // llama.cpp strips one leading space from the first token's piece when the
  // model prepends one while encoding.
  bool remove_space = add_space_prefix_;
  for (const int32_t id : ids) {
    const size_t before = text.size();
    append_piece(id, text, /*render_special=*/false);
    if (remove_space && text.size() > before && text[before] == ' ') text.erase(before, 1);
    remove_space = false;
  }
  if (clean_spaces_) clean_up_spaces(text);
  return text;
}

absl::StatusOr<std::string> Tokenizer::try_decode(std::span<const int32_t> ids) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!is_valid(ids[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", ids[i], " at index ", i, " is outside the vocabulary [0, ", n_vocab(), ")"));
    }
  }
  return decode(ids);
}

// llama.cpp's clean_up_tokenization_spaces, pass for pass, including its
// in-place quirk: the second pass overwrites the space it drops with NUL, which
// the next comparison then sees.
void Tokenizer::clean_up_spaces(std::string& text) const {
  if (text.empty()) return;
  // " ?", " !", " .", " ," lose the space.
  size_t total = 1;
  const size_t total1 = text.size();
  for (size_t i = 1; i < total1; ++i) {
    const char x = text[i];
    if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) --total;
    text[total++] = x;
  }
  // " ' " becomes "'".
  const size_t total2 = total;
  total = 1;
  for (size_t i = 1; i < total2; ++i) {
    const char x = text[i];
    if (x == '\'' && i + 1 < total2 && text[i - 1] == ' ' && text[i + 1] == ' ') {
      --total;
      text[++i] = '\0';
    }
    text[total++] = x;
  }
  // " 's", " 'm", " 're", " 've" lose the space; " 't", " 'd", " 'll" keep it.
  const size_t total3 = total;
  total = 1;
  for (size_t i = 1; i < total3; ++i) {
    const char x = text[i];
    if (text[i - 1] == ' ' && x == '\'' && i + 1 < total3) {
      const char x1 = text[i + 1];
      if (x1 == 's' || x1 == 'm') {
        --total;
      } else if (i + 2 < total3) {
        const char x2 = text[i + 2];
        if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) --total;
      }
    }
    text[total++] = x;
  }
  text.resize(total);
}

int32_t Tokenizer::n_vocab() const { return vocab_->size(); }

bool Tokenizer::is_valid(int32_t id) const { return vocab_->valid(id); }

bool Tokenizer::is_eog(int32_t id) const {
  return is_valid(id) && eog_[static_cast<size_t>(id)] != 0;
}

bool Tokenizer::is_control(int32_t id) const {
  return is_valid(id) && (vocab_->at(id).attr & (kAttrControl | kAttrUnknown)) != 0;
}

std::string_view Tokenizer::token_text(int32_t id) const {
  return is_valid(id) ? std::string_view(vocab_->at(id).text) : std::string_view();
}

}  // namespace tandem::tokenizer
