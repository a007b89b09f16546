#include "runtime/tokenizer/unicode.h"

#include <array>

namespace tandem::tokenizer {
namespace {

struct ByteTable {
  std::array<std::string, 256> to_unicode;
  std::array<int32_t, 324> from_unicode;  // mapped code points are all < 324

  ByteTable() {
    from_unicode.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const uint32_t cpt = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(next++);
      append_utf8(cpt, to_unicode[static_cast<size_t>(b)]);
      from_unicode[cpt] = b;
    }
  }
};

const ByteTable& byte_table() {
  static const ByteTable table;
  return table;
}

}  // namespace

std::vector<uint32_t> decode_utf8_lenient(std::string_view text) {
  std::vector<uint32_t> out;
  out.reserve(text.size());
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const auto cont = [&](size_t i) { return i < text.size() && (byte(i) & 0xC0) == 0x80; };
  size_t i = 0;
  while (i < text.size()) {
    const uint8_t b0 = byte(i);
    if (!(b0 & 0x80)) {
      out.push_back(b0);
      i += 1;
    } else if (!(b0 & 0x40)) {
      out.push_back(kReplacementChar);
      i += 1;
    } else if (!(b0 & 0x20)) {
      if (!cont(i + 1)) {
        out.push_back(kReplacementChar);
        i += 1;
        continue;
      }
      out.push_back(((b0 & 0x1Fu) << 6) | (byte(i + 1) & 0x3Fu));
      i += 2;
    } else if (!(b0 & 0x10)) {
      if (!cont(i + 1) || !cont(i + 2)) {
        out.push_back(kReplacementChar);
        i += 1;
        continue;
      }
      out.push_back(((b0 & 0x0Fu) << 12) | ((byte(i + 1) & 0x3Fu) << 6) | (byte(i + 2) & 0x3Fu));
      i += 3;
    } else if (!(b0 & 0x08)) {
      if (!cont(i + 1) || !cont(i + 2) || !cont(i + 3)) {
        out.push_back(kReplacementChar);
        i += 1;
        continue;
      }
      out.push_back(((b0 & 0x07u) << 18) | ((byte(i + 1) & 0x3Fu) << 12) |
                    ((byte(i + 2) & 0x3Fu) << 6) | (byte(i + 3) & 0x3Fu));
      i += 4;
    } else {
      out.push_back(kReplacementChar);
      i += 1;
    }
  }
  return out;
}

void append_utf8(uint32_t cpt, std::string& out) {
  if (cpt < 0x80) {
    out.push_back(static_cast<char>(cpt));
  } else if (cpt < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cpt >> 6)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else if (cpt < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cpt >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cpt >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  }
}

Utf8Scan scan_utf8(std::string_view text, size_t pos, size_t* len) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t b0 = byte(pos);
  *len = 1;
  if (b0 < 0x80) return Utf8Scan::kComplete;
  size_t need = 0;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlongs
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // <= U+10FFFF
  } else {
    return Utf8Scan::kInvalid;
  }
  for (size_t k = 1; k < need; ++k) {
    if (pos + k >= text.size()) return Utf8Scan::kIncomplete;
    const uint8_t b = byte(pos + k);
    const uint8_t min = k == 1 ? lo : 0x80;
    const uint8_t max = k == 1 ? hi : 0xBF;
    if (b < min || b > max) return Utf8Scan::kInvalid;
  }
  *len = need;
  return Utf8Scan::kComplete;
}

std::string_view byte_to_unicode(uint8_t byte) { return byte_table().to_unicode[byte]; }

int unicode_to_byte(uint32_t cpt) {
  const auto& table = byte_table().from_unicode;
  return cpt < table.size() ? table[cpt] : -1;
}

}  // namespace tandem::tokenizer
