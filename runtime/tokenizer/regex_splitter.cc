#include "runtime/tokenizer/regex_splitter.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"

namespace tandem::tokenizer {
namespace {

// Unicode White_Space, the set llama.cpp's unicode tables mark as whitespace.
constexpr char kWhitespaceSet[] =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

// Rewrites \s and \S (inside or outside a character class) to the explicit
// whitespace set so that PCRE2 and llama.cpp agree on what is a space.
std::string rewrite_whitespace(std::string_view pattern) {
  std::string out;
  int class_depth = 0;  // > 0 inside [...]
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char next = pattern[i + 1];
      if (next == 's') {
        if (class_depth > 0) {
          out += kWhitespaceSet;
        } else {
          absl::StrAppend(&out, "[", kWhitespaceSet, "]");
        }
        ++i;
        continue;
      }
      if (next == 'S' && class_depth == 0) {
        absl::StrAppend(&out, "[^", kWhitespaceSet, "]");
        ++i;
        continue;
      }
      out += c;
      out += next;
      ++i;
      continue;
    }
    if (c == '[') {
      ++class_depth;
    } else if (c == ']' && class_depth > 0) {
      --class_depth;
    }
    out += c;
  }
  return out;
}

}  // namespace

struct RegexSplitter::Compiled {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Compiled() {
    if (code != nullptr) pcre2_code_free(code);
  }
};

RegexSplitter::~RegexSplitter() = default;

absl::StatusOr<std::unique_ptr<RegexSplitter>> RegexSplitter::Create(
    const std::vector<std::string>& patterns) {
  std::unique_ptr<RegexSplitter> splitter(new RegexSplitter());
  for (const std::string& source : patterns) {
    const std::string pattern = rewrite_whitespace(source);
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    auto compiled = std::make_unique<Compiled>();
    compiled->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
    if (compiled->code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return absl::InvalidArgumentError(absl::StrCat("pre-tokenizer regex '", source,
                                                     "' does not compile at offset ", error_offset,
                                                     ": ", reinterpret_cast<const char*>(message)));
    }
    // JIT is an optimisation only; the interpreter gives the same matches.
    compiled->jit = pcre2_jit_compile(compiled->code, PCRE2_JIT_COMPLETE) == 0;
    splitter->patterns_.push_back(std::move(compiled));
  }
  return splitter;
}

void RegexSplitter::split(std::string_view text, std::vector<Piece>& pieces) const {
  // The caller guarantees valid UTF-8; without this flag PCRE2 re-validates
  // the whole subject on every call, which makes splitting quadratic.
  constexpr uint32_t kMatchOptions = PCRE2_NO_UTF_CHECK;
  pieces.clear();
  if (text.empty()) return;
  pieces.push_back({0, text.size()});
  std::vector<Piece> next;
  for (const auto& compiled : patterns_) {
    pcre2_match_data* match = pcre2_match_data_create_from_pattern(compiled->code, nullptr);
    next.clear();
    for (const Piece& piece : pieces) {
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + piece.offset);
      const PCRE2_SIZE length = piece.length;
      PCRE2_SIZE pos = 0;      // where the next search starts
      PCRE2_SIZE emitted = 0;  // end of what has been emitted
      while (pos < length) {
        // The subject is the piece alone, so lookarounds cannot see past it,
        // as with llama.cpp's per-piece std::regex iteration.
        int rc = pcre2_match(compiled->code, subject, length, pos, kMatchOptions, match, nullptr);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && compiled->jit) {
          rc = pcre2_match(compiled->code, subject, length, pos, kMatchOptions | PCRE2_NO_JIT,
                           match, nullptr);
        }
        if (rc < 0) break;  // no match (or a resource limit): the rest is one piece
        const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
        const PCRE2_SIZE start = ovector[0];
        const PCRE2_SIZE end = ovector[1];
        if (end == start) {
          // An empty match splits nothing; step over one character.
          pos = start + 1;
          while (pos < length && (subject[pos] & 0xC0) == 0x80) ++pos;
          continue;
        }
        if (start > emitted) {
          next.push_back({piece.offset + emitted, start - emitted});
        }
        next.push_back({piece.offset + start, end - start});
        emitted = end;
        pos = end;
      }
      if (emitted < length) {
        next.push_back({piece.offset + emitted, length - emitted});
      }
    }
    pcre2_match_data_free(match);
    pieces.swap(next);
  }
}

}  // namespace tandem::tokenizer
