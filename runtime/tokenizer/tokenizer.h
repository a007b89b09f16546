// Text <-> token ids for the models Tandem runs, reproducing llama.cpp
// (commit 3f545becc) token for token: SentencePiece-style BPE for
// tokenizer.ggml.model "llama" and byte-level BPE for "gpt2", loaded from the
// tokenizer.ggml.* keys of a GGUF file. Encoding, piece rendering and
// detokenization follow llama_tokenize, llama_token_to_piece and
// llama_detokenize, including their whitespace quirks.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/gguf/gguf.h"
#include "runtime/tokenizer/stream_decoder.h"  // IWYU pragma: export

namespace tandem::tokenizer {

class Vocab;
class SpmEncoder;
class BpeEncoder;

// tokenizer.ggml.token_type values.
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct EncodeOptions {
  // llama.cpp's add_special: prepend BOS when the model asks for it
  // (tokenizer.ggml.add_bos_token), append EOS when it asks for that.
  bool add_bos = true;
  // Control and user-defined token texts in the input become those tokens.
  // User-defined tokens are split out even when this is false, as in llama.cpp.
  bool parse_special = false;
};

class Tokenizer {
 public:
  // Errors name the key that is missing or bad.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const gguf::File& file);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Thread-safe. Allocates its own scratch space per call.
  std::vector<int32_t> encode(std::string_view text, EncodeOptions options = {}) const;

  // llama_token_to_piece with lstrip 0: control and unknown tokens render
  // only when `render_special`. Invalid ids render as "".
  std::string token_to_piece(int32_t id, bool render_special = false) const;
  // The same, appended to `out` (no allocation when `out` has room).
  void append_piece(int32_t id, std::string& out, bool render_special = false) const;

  // llama_detokenize(ids, remove_special=false, unparse_special=false).
  // Invalid ids contribute nothing; see try_decode.
  std::string decode(std::span<const int32_t> ids) const;
  // decode, but an invalid id is an INVALID_ARGUMENT naming it and its index.
  absl::StatusOr<std::string> try_decode(std::span<const int32_t> ids) const;

  int32_t n_vocab() const;
  // -1 when absent.
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t eot_id() const { return eot_id_; }
  int32_t eom_id() const { return eom_id_; }
  int32_t unk_id() const { return unk_id_; }
  int32_t pad_id() const { return pad_id_; }

  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }
  bool add_space_prefix() const { return add_space_prefix_; }
  // End of generation: EOS, EOT, EOM and the tokens llama.cpp recognises by
  // text (<|eot_id|>, <|end_of_text|>, <|im_end|>, </s>, ...).
  bool is_eog(int32_t id) const;
  bool is_valid(int32_t id) const;
  // Control or unknown: hidden by token_to_piece unless render_special.
  bool is_control(int32_t id) const;
  // The raw vocabulary text ("" for an invalid id).
  std::string_view token_text(int32_t id) const;

  std::string_view model() const { return model_; }  // "llama" or "gpt2"
  std::string_view pre() const { return pre_; }      // tokenizer.ggml.pre as stored

 private:
  enum class Kind { kSpm, kBpe };
  struct Fragment {
    int32_t token;  // -1 for raw text
    size_t offset;
    size_t length;
  };

  Tokenizer();
  absl::Status LoadSpecialTokens(const gguf::File& file);
  void FinishLoad();
  void partition(std::string_view text, bool parse_special, std::vector<Fragment>& out) const;
  void clean_up_spaces(std::string& text) const;

  Kind kind_ = Kind::kSpm;
  std::string model_;
  std::string pre_;
  std::unique_ptr<Vocab> vocab_;
  std::unique_ptr<SpmEncoder> spm_;
  std::unique_ptr<BpeEncoder> bpe_;

  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  int32_t eot_id_ = -1;
  int32_t eom_id_ = -1;
  int32_t unk_id_ = -1;
  int32_t pad_id_ = -1;
  bool add_bos_ = false;
  bool add_eos_ = false;
  bool add_space_prefix_ = false;
  bool clean_spaces_ = false;

  std::vector<std::string> pieces_;      // token_to_piece(id, render_special=true)
  std::vector<uint8_t> eog_;             // per token
  std::vector<int32_t> special_tokens_;  // control/user-defined/unknown, longest first
};

}  // namespace tandem::tokenizer
