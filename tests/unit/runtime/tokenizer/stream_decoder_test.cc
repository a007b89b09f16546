// StreamDecoder: multi-byte characters split over byte tokens come out whole.
#include "runtime/tokenizer/stream_decoder.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/unit/runtime/tokenizer/test_vocabs.h"

namespace tandem::tokenizer {
namespace {

bool is_valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<uint8_t>(s[i]);
    size_t n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<uint8_t>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

// Streams `ids`, checking that every chunk is valid UTF-8; returns the text.
std::string stream(const Tokenizer& t, const std::vector<int32_t>& ids,
                   std::vector<std::string>* chunks = nullptr) {
  StreamDecoder decoder(t);
  std::string text;
  for (const int32_t id : ids) {
    const std::string chunk = decoder.push(id);
    EXPECT_TRUE(is_valid_utf8(chunk)) << "chunk after id " << id;
    if (chunks != nullptr) chunks->push_back(chunk);
    text += chunk;
  }
  text += decoder.flush();
  return text;
}

TEST(StreamDecoderTest, Llama2ByteFallbackEmoji) {
  const Tokenizer* t = testing::llama2();
  ASSERT_NE(t, nullptr);
  // "👋" has no piece in Llama 2: it is <0xF0><0x9F><0x91><0x8B>.
  const std::vector<int32_t> ids = t->encode("Hi 👋!", {.add_bos = false});
  std::vector<std::string> chunks;
  EXPECT_EQ(stream(*t, ids, &chunks), " Hi 👋!");  // pieces keep the prefix space
  // The emoji appears in one chunk, after its last byte token.
  int whole = 0;
  for (const std::string& chunk : chunks) {
    if (chunk.find("👋") != std::string::npos) ++whole;
    EXPECT_EQ(chunk.find('\xF0') == std::string::npos || chunk.find("👋") != std::string::npos,
              true);
  }
  EXPECT_EQ(whole, 1);
  ASSERT_GE(chunks.size(), 4u);
}

TEST(StreamDecoderTest, Llama3SplitEmojiSequences) {
  const Tokenizer* t = testing::llama3();
  ASSERT_NE(t, nullptr);
  for (const std::string text :
       {"👨‍👩‍👧‍👦", "🇺🇸🇯🇵🇫🇷", "Hello 👋 世界 🌍 مرحبا", "नमस्ते दुनिया"}) {
    const std::vector<int32_t> ids = t->encode(text, {.add_bos = false});
    EXPECT_EQ(stream(*t, ids), text);
  }
  // Token 9468 is the first bytes of many emoji ("ðŁ"): alone it prints nothing.
  StreamDecoder decoder(*t);
  EXPECT_EQ(decoder.push(9468), "");
  EXPECT_EQ(decoder.push(239), "");
  EXPECT_EQ(decoder.push(101), "👨");
  EXPECT_EQ(decoder.flush(), "");
}

TEST(StreamDecoderTest, FlushAndInvalidBytes) {
  const Tokenizer* t = testing::llama2();
  ASSERT_NE(t, nullptr);
  const int32_t byte0 = 3;  // <0x00>
  StreamDecoder decoder(*t);
  EXPECT_EQ(decoder.push(byte0 + 0xF0), "");
  EXPECT_EQ(decoder.push(byte0 + 0x9F), "");
  // Stream ends mid-character: each held byte becomes U+FFFD.
  EXPECT_EQ(decoder.flush(), "\xEF\xBF\xBD\xEF\xBF\xBD");
  // A byte that can never start or continue a sequence is replaced at once.
  EXPECT_EQ(decoder.push(byte0 + 0xFF), "\xEF\xBF\xBD");
  EXPECT_EQ(decoder.push(byte0 + 0x41), "A");
  // A lead byte followed by a non-continuation: U+FFFD, then the next char.
  EXPECT_EQ(decoder.push(byte0 + 0xC3), "");
  EXPECT_EQ(decoder.push(byte0 + 0x41),
            "\xEF\xBF\xBD"
            "A");
  // Control tokens print nothing unless asked for.
  EXPECT_EQ(decoder.push(2), "");
  StreamDecoder special(*t, /*render_special=*/true);
  EXPECT_EQ(special.push(2), "</s>");
  // Invalid ids print nothing.
  EXPECT_EQ(decoder.push(-1), "");
  EXPECT_EQ(decoder.push(1 << 30), "");
  EXPECT_EQ(decoder.flush(), "");
}

}  // namespace
}  // namespace tandem::tokenizer
