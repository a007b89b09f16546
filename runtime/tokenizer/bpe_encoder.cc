#include "runtime/tokenizer/bpe_encoder.h"

#include <algorithm>
#include <queue>
#include <utility>

#include "runtime/tokenizer/unicode.h"

namespace tandem::tokenizer {
namespace {

uint64_t merge_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

struct Symbol {
  int32_t prev;
  int32_t next;
  size_t start;  // bytes into the word
  size_t n;      // 0 once merged into its left neighbour
  int32_t piece;
};

struct Bigram {
  int32_t rank;
  int32_t left;
  int32_t right;
  size_t size;
  int32_t result;
};

// Lowest rank first; among equal ranks the leftmost, as llama.cpp orders them.
struct BigramOrder {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
};

// llama.cpp decodes the text to code points and re-encodes each piece; this
// builds that re-encoding (`raw`) and a copy safe for PCRE2 (`clean`) in which
// surrogates, which PCRE2 rejects, become U+FFFD. Both encodings are three
// bytes long, so offsets agree. Code points past U+10FFFF (llama.cpp throws on
// them) become U+FFFD in both.
void sanitize(std::string_view text, std::string& raw, std::string& clean) {
  raw.clear();
  clean.clear();
  for (const uint32_t cpt : decode_utf8_lenient(text)) {
    if (cpt > 0x10FFFF) {
      append_utf8(kReplacementChar, raw);
      append_utf8(kReplacementChar, clean);
    } else if (cpt >= 0xD800 && cpt <= 0xDFFF) {
      append_utf8(cpt, raw);
      append_utf8(kReplacementChar, clean);
    } else {
      append_utf8(cpt, raw);
      append_utf8(cpt, clean);
    }
  }
}

bool is_well_formed(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t len = 0;
    if (scan_utf8(text, pos, &len) != Utf8Scan::kComplete) return false;
    pos += len;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeEncoder>> BpeEncoder::Create(
    const Vocab& vocab, const std::vector<std::string_view>& merges,
    const std::vector<std::string>& regexes, bool ignore_merges) {
  std::unique_ptr<BpeEncoder> encoder(new BpeEncoder(vocab, ignore_merges));
  auto splitter = RegexSplitter::Create(regexes);
  if (!splitter.ok()) return splitter.status();
  encoder->splitter_ = std::move(splitter).value();

  encoder->merges_.reserve(merges.size());
  std::string joined;
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string_view merge = merges[i];
    // Split at the first space after the first character, as llama.cpp does;
    // a merge without one can never apply.
    const size_t pos = merge.find(' ', 1);
    if (pos == std::string_view::npos) continue;
    const std::string_view left = merge.substr(0, pos);
    const std::string_view right = merge.substr(pos + 1);
    if (right.empty()) continue;
    joined.assign(left);
    joined.append(right);
    const int32_t left_id = encoder->intern_piece(left);
    const int32_t right_id = encoder->intern_piece(right);
    const int32_t result_id = encoder->intern_piece(joined);
    // The first (lowest-rank) occurrence of a pair wins.
    encoder->merges_.try_emplace(merge_key(left_id, right_id),
                                 Merge{static_cast<int32_t>(i), result_id});
  }
  return encoder;
}

int32_t BpeEncoder::find_piece(std::string_view text) const {
  const int32_t id = vocab_.find(text);
  if (id >= 0) return id;
  auto it = extra_piece_ids_.find(text);
  return it == extra_piece_ids_.end() ? -1 : it->second;
}

int32_t BpeEncoder::intern_piece(std::string_view text) {
  const int32_t id = find_piece(text);
  if (id >= 0) return id;
  const int32_t new_id = vocab_.size() + static_cast<int32_t>(extra_pieces_.size());
  extra_pieces_.emplace_back(text);
  extra_piece_ids_.emplace(std::string_view(extra_pieces_.back()), new_id);
  return new_id;
}

void BpeEncoder::encode(std::string_view text, std::vector<int32_t>& out) const {
  std::string raw_storage, clean_storage;
  std::string_view raw = text, clean = text;
  if (!is_well_formed(text)) {
    sanitize(text, raw_storage, clean_storage);
    raw = raw_storage;
    clean = clean_storage;
  }
  std::vector<Piece> pieces;
  splitter_->split(clean, pieces);
  std::string word;
  for (const Piece& piece : pieces) {
    word.clear();
    for (const char c : raw.substr(piece.offset, piece.length)) {
      word += byte_to_unicode(static_cast<uint8_t>(c));
    }
    encode_word(word, out);
  }
}

void BpeEncoder::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const int32_t id = vocab_.find(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }

  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for (size_t offset = 0; offset < word.size();) {
    const size_t n = std::min(word.size() - offset, utf8_len(word[offset]));
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({index - 1, offset + n == word.size() ? -1 : index + 1, offset, n,
                       find_piece(word.substr(offset, n))});
    offset += n;
  }

  std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder> queue;
  const auto add_bigram = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = symbols[static_cast<size_t>(left)];
    const Symbol& r = symbols[static_cast<size_t>(right)];
    if (l.piece < 0 || r.piece < 0) return;
    auto it = merges_.find(merge_key(l.piece, r.piece));
    if (it == merges_.end()) return;
    queue.push({it->second.rank, left, right, l.n + r.n, it->second.result});
  };
  for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) add_bigram(i - 1, i);

  while (!queue.empty()) {
    const Bigram bigram = queue.top();
    queue.pop();
    Symbol& left = symbols[static_cast<size_t>(bigram.left)];
    Symbol& right = symbols[static_cast<size_t>(bigram.right)];
    // Neighbours stay neighbours while both live and sizes only grow, so an
    // unchanged total size means the pair is still the one that was queued.
    if (left.n == 0 || right.n == 0 || left.n + right.n != bigram.size) continue;
    left.n += right.n;
    left.piece = bigram.result;
    right.n = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = bigram.left;
    add_bigram(left.prev, bigram.left);
    add_bigram(bigram.left, left.next);
  }

  for (int32_t i = 0; i != -1; i = symbols[static_cast<size_t>(i)].next) {
    const Symbol& symbol = symbols[static_cast<size_t>(i)];
    if (symbol.piece >= 0 && symbol.piece < vocab_.size()) {
      out.push_back(symbol.piece);
      continue;
    }
    // Not a token: llama.cpp falls back to single-byte tokens of the mapped
    // text and drops bytes that have none.
    for (const char c : word.substr(symbol.start, symbol.n)) {
      const int32_t id = vocab_.find(std::string_view(&c, 1));
      if (id >= 0) out.push_back(id);
    }
  }
}

}  // namespace tandem::tokenizer
