// UTF-8 helpers for the tokenizers, written to reproduce llama.cpp's handling
// of malformed input exactly (which bytes become U+FFFD, how a lead byte sizes
// a symbol), plus GPT-2's byte <-> unicode table used by byte-level BPE.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::tokenizer {

inline constexpr uint32_t kReplacementChar = 0xFFFD;

// Bytes a symbol starting with `lead` spans, from its high nibble only, as
// llama.cpp's unicode_len_utf8 does: continuation bytes count as 1.
inline size_t utf8_len(char lead) {
  static constexpr size_t kLookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLookup[static_cast<uint8_t>(lead) >> 4];
}

// llama.cpp's unicode_cpts_from_utf8: a lead byte with the right number of
// continuation bytes decodes (overlong forms and surrogates included); any
// other byte becomes U+FFFD and decoding resumes at the next byte.
std::vector<uint32_t> decode_utf8_lenient(std::string_view text);

// Appends the UTF-8 encoding of `cpt` (< 0x110000).
void append_utf8(uint32_t cpt, std::string& out);

// Result of looking at the bytes from some position as one UTF-8 sequence,
// under the strict (well-formed) rules.
enum class Utf8Scan { kComplete, kIncomplete, kInvalid };
// On kComplete, *len is the sequence length; on kInvalid, *len is how many
// bytes form the maximal invalid prefix (always 1 here: one U+FFFD per byte).
Utf8Scan scan_utf8(std::string_view text, size_t pos, size_t* len);

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the other 68
// to U+0100 and up. Returns the UTF-8 of the mapped character.
std::string_view byte_to_unicode(uint8_t byte);
// The inverse; -1 when `cpt` is not in the table.
int unicode_to_byte(uint32_t cpt);

}  // namespace tandem::tokenizer
