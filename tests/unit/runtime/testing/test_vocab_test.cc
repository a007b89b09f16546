#include "runtime/testing/test_vocab.h"

#include <set>
#include <string>

#include "gtest/gtest.h"
#include "runtime/gguf/gguf.h"
#include "runtime/testing/bpe_trainer.h"
#include "runtime/testing/corpus.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tandem::testing {
namespace {

TEST(BpeTrainer, MergesMostFrequentPairFirstWithLexicographicTies) {
  const auto words =
      count_words({{"a", "b", "c"}, {"a", "b", "c"}, {"a", "b"}, {"x", "y"}, {"c", "d"}});
  const auto merges = learn_merges(words, 100);
  ASSERT_GE(merges.size(), 3u);
  EXPECT_EQ(merges[0].left, "a");  // "a b" occurs 3 times
  EXPECT_EQ(merges[0].right, "b");
  EXPECT_EQ(merges[1].left, "ab");  // "ab c" twice
  EXPECT_EQ(merges[1].right, "c");
  EXPECT_EQ(merges[2].left, "c");  // the count-1 pairs in lexicographic order
  EXPECT_EQ(merges[2].right, "d");
  EXPECT_EQ(merges.size(), 4u);  // then "x y"; every word is one symbol
  EXPECT_EQ(learn_merges(words, 1).size(), 1u);
}

TEST(TestVocab, ByteToUnicodeMatchesGpt2) {
  EXPECT_EQ(byte_to_unicode('!'), "!");
  EXPECT_EQ(byte_to_unicode('a'), "a");
  EXPECT_EQ(byte_to_unicode(' '), "\xC4\xA0");   // U+0120 'Ġ'
  EXPECT_EQ(byte_to_unicode('\n'), "\xC4\x8A");  // U+010A 'Ċ'
  EXPECT_EQ(byte_to_unicode(0), "\xC4\x80");     // U+0100
  EXPECT_EQ(byte_to_unicode(0xAD), "\xC5\x83");  // U+0143
  std::set<std::string> all;
  for (int b = 0; b < 256; ++b) all.insert(byte_to_unicode(static_cast<uint8_t>(b)));
  EXPECT_EQ(all.size(), 256u);
}

class SpmVocab : public ::testing::TestWithParam<int64_t> {};

TEST_P(SpmVocab, LayoutAndReachability) {
  const int64_t n = GetParam();
  auto v = build_test_vocab("spm", n);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->model, "llama");
  ASSERT_EQ(static_cast<int64_t>(v->tokens.size()), n);
  ASSERT_EQ(v->scores.size(), v->tokens.size());
  ASSERT_EQ(v->token_types.size(), v->tokens.size());
  EXPECT_EQ(v->tokens[0], "<unk>");
  EXPECT_EQ(v->token_types[0], kTokenUnknown);
  EXPECT_EQ(v->tokens[1], "<s>");
  EXPECT_EQ(v->token_types[1], kTokenControl);
  EXPECT_EQ(v->tokens[2], "</s>");
  EXPECT_EQ(v->token_types[2], kTokenControl);
  EXPECT_EQ(v->tokens[3], "<0x00>");
  EXPECT_EQ(v->tokens[3 + 0x0A], "<0x0A>");
  EXPECT_EQ(v->tokens[3 + 0xFF], "<0xFF>");
  for (int i = 3; i < 259; ++i) EXPECT_EQ(v->token_types[static_cast<size_t>(i)], kTokenByte);
  EXPECT_EQ(v->tokens[259], "\xE2\x96\x81");
  EXPECT_EQ(v->unk_id, 0);
  EXPECT_EQ(v->bos_id, 1);
  EXPECT_EQ(v->eos_id, 2);
  EXPECT_TRUE(v->add_bos);
  EXPECT_TRUE(v->add_space_prefix);

  const std::set<std::string> all(v->tokens.begin(), v->tokens.end());
  EXPECT_EQ(all.size(), v->tokens.size()) << "duplicate token text";
  // Every piece past the single characters is some concatenation of two
  // pieces, and learned scores strictly decrease.
  float last_score = 0.0f;
  for (size_t i = 354; i < v->tokens.size(); ++i) {
    const std::string& t = v->tokens[i];
    EXPECT_EQ(v->token_types[i], kTokenNormal);
    bool split = false;
    for (size_t k = 1; k < t.size() && !split; ++k) {
      split = all.count(t.substr(0, k)) && all.count(t.substr(k));
    }
    EXPECT_TRUE(split) << "unreachable piece " << t;
    EXPECT_LT(v->scores[i], last_score) << t;
    last_score = v->scores[i];
  }
  // The corpus's common words are whole pieces.
  if (n >= 512) {
    EXPECT_TRUE(all.count("\xE2\x96\x81the"));
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, SpmVocab, ::testing::Values(354, 512, 4096, 32000));

class BpeVocab : public ::testing::TestWithParam<int64_t> {};

TEST_P(BpeVocab, LayoutAndMerges) {
  const int64_t n = GetParam();
  auto v = build_test_vocab("bpe", n);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->model, "gpt2");
  EXPECT_EQ(v->pre, "llama-bpe");
  ASSERT_EQ(static_cast<int64_t>(v->tokens.size()), n);
  ASSERT_EQ(v->token_types.size(), v->tokens.size());
  EXPECT_TRUE(v->scores.empty());
  for (int b = 0; b < 256; ++b) {
    EXPECT_EQ(v->tokens[static_cast<size_t>(b)], byte_to_unicode(static_cast<uint8_t>(b)));
  }
  EXPECT_EQ(v->tokens[static_cast<size_t>(n - 3)], "<|begin_of_text|>");
  EXPECT_EQ(v->tokens[static_cast<size_t>(n - 2)], "<|end_of_text|>");
  EXPECT_EQ(v->tokens[static_cast<size_t>(n - 1)], "<|eot_id|>");
  for (int64_t i = n - 3; i < n; ++i)
    EXPECT_EQ(v->token_types[static_cast<size_t>(i)], kTokenControl);
  EXPECT_EQ(v->bos_id, n - 3);
  EXPECT_EQ(v->eos_id, n - 1);
  EXPECT_EQ(v->unk_id, -1);

  const std::set<std::string> all(v->tokens.begin(), v->tokens.end());
  EXPECT_EQ(all.size(), v->tokens.size()) << "duplicate token text";
  std::set<std::string> merged;
  for (const std::string& m : v->merges) {
    const size_t sp = m.find(' ');
    ASSERT_NE(sp, std::string::npos) << m;
    ASSERT_EQ(m.find(' ', sp + 1), std::string::npos) << m;
    const std::string left = m.substr(0, sp), right = m.substr(sp + 1);
    EXPECT_TRUE(all.count(left)) << m;
    EXPECT_TRUE(all.count(right)) << m;
    EXPECT_TRUE(all.count(left + right)) << m;
    merged.insert(left + right);
  }
  // Every regular token past the bytes is the result of a merge.
  for (int64_t i = 256; i < n - 3; ++i) {
    EXPECT_TRUE(merged.count(v->tokens[static_cast<size_t>(i)]))
        << v->tokens[static_cast<size_t>(i)];
  }
  if (n >= 512) {
    EXPECT_TRUE(all.count("\xC4\xA0the"));  // "Ġthe"
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, BpeVocab, ::testing::Values(259, 512, 4096, 32000));

TEST(TestVocab, RefusesBadRequests) {
  EXPECT_EQ(build_test_vocab("wordpiece", 512).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(build_test_vocab("spm", 353).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(build_test_vocab("bpe", 258).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TestVocab, IsDeterministic) {
  for (const char* kind : {"spm", "bpe"}) {
    auto a = build_test_vocab(kind, 4096);
    auto b = build_test_vocab(kind, 4096);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->tokens, b->tokens);
    EXPECT_EQ(a->merges, b->merges);
  }
}

// The vocabularies load in the real tokenizer (llama.cpp's algorithms) and
// round-trip English, with the corpus's words as single tokens.
class VocabRoundTrip : public ::testing::TestWithParam<std::pair<const char*, int64_t>> {};

TEST_P(VocabRoundTrip, LoadsAndRoundTripsEnglish) {
  const auto [kind, n] = GetParam();
  auto v = build_test_vocab(kind, n);
  ASSERT_TRUE(v.ok()) << v.status();
  gguf::Writer w;
  w.set("general.architecture", gguf::Value::str("llama"));
  add_vocab_metadata(*v, w);
  auto bytes = w.write_to_memory();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto file = gguf::File::Parse(*bytes, "vocab");
  ASSERT_TRUE(file.ok()) << file.status();
  auto tok = tokenizer::Tokenizer::FromGguf(*file);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const tokenizer::Tokenizer& t = **tok;
  EXPECT_EQ(t.n_vocab(), n);
  EXPECT_EQ(t.bos_id(), v->bos_id);
  EXPECT_EQ(t.eos_id(), v->eos_id);
  EXPECT_TRUE(t.is_eog(v->eos_id));
  EXPECT_TRUE(t.add_bos());

  const std::string texts[] = {
      std::string(kTrainingText),
      "Hello world! The quick brown fox jumps over the lazy dog.",
      "  Leading spaces, tabs\tand\nnew lines\n\n and 12345 digits; symbols #@%^&*(){}[]~",
      "Unicode falls back to bytes: caf\xC3\xA9, na\xC3\xAFve, \xE2\x98\x95, \xF0\x9F\x98\x80.",
  };
  for (const std::string& text : texts) {
    const std::vector<int32_t> ids = t.encode(text);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids.front(), v->bos_id);
    for (int32_t id : ids) ASSERT_TRUE(t.is_valid(id));
    EXPECT_EQ(t.decode(std::span<const int32_t>(ids).subspan(1)), text) << kind;
  }
  // Learned pieces compress the text they were learned on.
  const auto ids = t.encode(kTrainingText, {.add_bos = false});
  const size_t per_token = n >= 4096 ? 4 : 2;  // characters per token, at least
  EXPECT_LT(ids.size() * per_token, kTrainingText.size()) << kind << " " << n;
}

INSTANTIATE_TEST_SUITE_P(Vocabs, VocabRoundTrip,
                         ::testing::Values(std::pair<const char*, int64_t>{"spm", 512},
                                           std::pair<const char*, int64_t>{"spm", 32000},
                                           std::pair<const char*, int64_t>{"bpe", 512},
                                           std::pair<const char*, int64_t>{"bpe", 4096}),
                         [](const auto& info) {
                           return std::string(info.param.first) + "_" +
                                  std::to_string(info.param.second);
                         });

}  // namespace
}  // namespace tandem::testing
