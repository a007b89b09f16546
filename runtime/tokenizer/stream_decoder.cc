#include "runtime/tokenizer/stream_decoder.h"

#include "runtime/tokenizer/tokenizer.h"
#include "runtime/tokenizer/unicode.h"

namespace tandem::tokenizer {

std::string StreamDecoder::push(int32_t id) {
  tokenizer_.append_piece(id, pending_, render_special_);
  std::string out;
  size_t pos = 0;
  while (pos < pending_.size()) {
    size_t len = 0;
    const Utf8Scan scan = scan_utf8(pending_, pos, &len);
    if (scan == Utf8Scan::kIncomplete) break;  // wait for the next token
    if (scan == Utf8Scan::kComplete) {
      out.append(pending_, pos, len);
    } else {
      append_utf8(kReplacementChar, out);
    }
    pos += len;
  }
  pending_.erase(0, pos);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  for (size_t i = 0; i < pending_.size(); ++i) append_utf8(kReplacementChar, out);
  pending_.clear();
  return out;
}

}  // namespace tandem::tokenizer
