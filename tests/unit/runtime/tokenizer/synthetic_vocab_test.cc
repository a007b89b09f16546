// Small in-memory vocabularies: merge order, byte fallback, user-defined
// tokens, pre-tokenizer settings, and every load error naming its key.
#include <algorithm>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/gguf/gguf.h"
#include "runtime/tokenizer/regex_splitter.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/unit/runtime/tokenizer/test_vocabs.h"

namespace tandem::tokenizer {
namespace {

using gguf::Value;
using gguf::Writer;
using testing::FromWriter;

constexpr int32_t kNormal = static_cast<int32_t>(TokenType::kNormal);
constexpr int32_t kControl = static_cast<int32_t>(TokenType::kControl);
constexpr int32_t kUnknown = static_cast<int32_t>(TokenType::kUnknown);
constexpr int32_t kUserDefined = static_cast<int32_t>(TokenType::kUserDefined);
constexpr int32_t kByte = static_cast<int32_t>(TokenType::kByte);

struct Tok {
  std::string text;
  float score = 0.0f;
  int32_t type = kNormal;
};

Writer spm_writer(const std::vector<Tok>& toks) {
  Writer w;
  std::vector<std::string> texts;
  std::vector<float> scores;
  std::vector<int32_t> types;
  for (const Tok& t : toks) {
    texts.push_back(t.text);
    scores.push_back(t.score);
    types.push_back(t.type);
  }
  w.set("tokenizer.ggml.model", Value::str("llama"));
  w.set("tokenizer.ggml.tokens", Value::string_array(texts));
  w.set("tokenizer.ggml.scores", Value::f32_array(scores));
  w.set("tokenizer.ggml.token_type", Value::i32_array(types));
  return w;
}

Writer bpe_writer(const std::vector<Tok>& toks, const std::vector<std::string>& merges,
                  const std::string& pre) {
  Writer w;
  std::vector<std::string> texts;
  std::vector<int32_t> types;
  for (const Tok& t : toks) {
    texts.push_back(t.text);
    types.push_back(t.type);
  }
  w.set("tokenizer.ggml.model", Value::str("gpt2"));
  w.set("tokenizer.ggml.pre", Value::str(pre));
  w.set("tokenizer.ggml.tokens", Value::string_array(texts));
  w.set("tokenizer.ggml.token_type", Value::i32_array(types));
  w.set("tokenizer.ggml.merges", Value::string_array(merges));
  w.set("tokenizer.ggml.bos_token_id", Value::u32(0));
  w.set("tokenizer.ggml.eos_token_id", Value::u32(0));
  return w;
}

std::vector<Tok> spm_base() {
  return {{"<unk>", 0, kUnknown},
          {"<s>", 0, kControl},
          {"</s>", 0, kControl},
          {"\xE2\x96\x81", -10},
          {"a", -10},
          {"b", -10},
          {"c", -10}};
}

// ids: <unk>0 <s>1 </s>2 ▁3 a4 b5 c6, then extras from 7.
TEST(SyntheticVocabTest, SpmMergesHighestScoreFirst) {
  std::vector<Tok> toks = spm_base();
  toks.push_back(
      {"\xE2\x96\x81"
       "a",
       -5});                   // 7
  toks.push_back({"bc", -1});  // 8
  toks.push_back({"ab", -2});  // 9
  auto t = FromWriter(spm_writer(toks));
  ASSERT_TRUE(t.ok()) << t.status();
  // bc (-1) beats ab (-2); then ▁a (-5).
  EXPECT_EQ((*t)->encode("abc", {.add_bos = false}), (std::vector<int32_t>{7, 8}));
  EXPECT_EQ((*t)->encode("abc"), (std::vector<int32_t>{1, 7, 8}));
  EXPECT_EQ((*t)->decode(std::vector<int32_t>{7, 8}), "abc");

  toks[9].score = -0.5f;  // now ab wins and blocks ▁a and bc
  t = FromWriter(spm_writer(toks));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->encode("abc", {.add_bos = false}), (std::vector<int32_t>{3, 9, 6}));

  toks[9].score = -1.0f;  // tie between ab and bc: the leftmost pair merges
  t = FromWriter(spm_writer(toks));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->encode("abc", {.add_bos = false}), (std::vector<int32_t>{3, 9, 6}));
}

TEST(SyntheticVocabTest, SpmByteFallback) {
  std::vector<Tok> toks = spm_base();
  toks.push_back({"<0x78>", 0, kByte});  // 7: 'x'
  toks.push_back({"<0xC3>", 0, kByte});  // 8
  auto t = FromWriter(spm_writer(toks));
  ASSERT_TRUE(t.ok()) << t.status();
  // 'x' has no piece: its byte token; 'é' (C3 A9) has only its first byte
  // token, so the second falls back to <unk>.
  EXPECT_EQ((*t)->encode("ax\xC3\xA9", {.add_bos = false}), (std::vector<int32_t>{3, 4, 7, 8, 0}));
  EXPECT_EQ((*t)->token_to_piece(7), "x");
}

TEST(SyntheticVocabTest, SpmWithoutSpacePrefix) {
  std::vector<Tok> toks = spm_base();
  Writer w = spm_writer(toks);
  w.set("tokenizer.ggml.add_space_prefix", Value::boolean(false));
  w.set("tokenizer.ggml.add_bos_token", Value::boolean(false));
  auto t = FromWriter(w);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_FALSE((*t)->add_bos());
  EXPECT_EQ((*t)->encode("a b"), (std::vector<int32_t>{4, 3, 5}));
  EXPECT_EQ((*t)->decode(std::vector<int32_t>{3, 4}), " a");  // no strip either
}

TEST(SyntheticVocabTest, UserDefinedTokensAreAlwaysSplitOut) {
  std::vector<Tok> toks = spm_base();
  toks.push_back({"<tool>", 0, kUserDefined});  // 7
  toks.push_back({"<ctl>", 0, kControl});       // 8
  auto t = FromWriter(spm_writer(toks));
  ASSERT_TRUE(t.ok()) << t.status();
  const std::vector<int32_t> ids = (*t)->encode("a<tool>b", {.add_bos = false});
  EXPECT_EQ(ids, (std::vector<int32_t>{3, 4, 7, 3, 5}));  // text after it gets "▁" again
  EXPECT_EQ((*t)->token_to_piece(7), "<tool>");           // user-defined tokens always render
  // Control text is plain text unless parse_special.
  const std::vector<int32_t> plain = (*t)->encode("<ctl>", {.add_bos = false});
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 8), 0);
  EXPECT_EQ((*t)->encode("<ctl>", {.add_bos = false, .parse_special = true}),
            (std::vector<int32_t>{8}));
}

std::vector<Tok> bpe_tokens() {
  return {{"<|bos|>", 0, kControl}, {"a"}, {"b"}, {"c"}, {"ab"}, {"bc"}, {"abc"}, {"\xC4\xA0"}};
}

TEST(SyntheticVocabTest, BpeMergesLowestRankFirst) {
  // ids: <|bos|>0 a1 b2 c3 ab4 bc5 abc6 Ġ7
  auto t = FromWriter(bpe_writer(bpe_tokens(), {"b c", "a b"}, "gpt-2"));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_FALSE((*t)->add_bos());  // gpt-2 default
  EXPECT_EQ((*t)->encode("abc"), (std::vector<int32_t>{1, 5}));
  t = FromWriter(bpe_writer(bpe_tokens(), {"a b", "b c"}, "gpt-2"));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->encode("abc"), (std::vector<int32_t>{4, 3}));
  t = FromWriter(bpe_writer(bpe_tokens(), {"a b", "b c", "ab c"}, "gpt-2"));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->encode("abc"), (std::vector<int32_t>{6}));
  // A space is "Ġ" in the byte-level alphabet.
  EXPECT_EQ((*t)->encode("  a"), (std::vector<int32_t>{7, 7, 1}));
  EXPECT_EQ((*t)->decode(std::vector<int32_t>{7, 1}), " a");
}

TEST(SyntheticVocabTest, LlamaBpeIgnoresMergesForWholeWords) {
  // With llama-bpe, "abc" is in the vocabulary, so it is one token even
  // though the merges alone would give a + bc.
  auto t = FromWriter(bpe_writer(bpe_tokens(), {"b c"}, "llama-bpe"));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE((*t)->add_bos());  // llama-bpe default
  EXPECT_EQ((*t)->encode("abc", {.add_bos = false}), (std::vector<int32_t>{6}));
  t = FromWriter(bpe_writer(bpe_tokens(), {"b c"}, "dbrx"));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->encode("abc", {.add_bos = false}), (std::vector<int32_t>{1, 5}));
}

TEST(SyntheticVocabTest, BpeDropsBytesWithoutTokens) {
  // 'd' has no token and no merge: llama.cpp drops it.
  auto t = FromWriter(bpe_writer(bpe_tokens(), {"a b"}, "gpt-2"));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->encode("abd"), (std::vector<int32_t>{4}));
}

TEST(SyntheticVocabTest, RegexSplitterMatchesLlamaCppSplits) {
  const auto split = [](const std::vector<std::string>& regexes, const std::string& text) {
    auto splitter = RegexSplitter::Create(regexes);
    EXPECT_TRUE(splitter.ok()) << splitter.status();
    std::vector<Piece> pieces;
    (*splitter)->split(text, pieces);
    std::vector<std::string> out;
    for (const Piece& p : pieces) out.push_back(text.substr(p.offset, p.length));
    return out;
  };
  const std::string llama3 =
      "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
      "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  EXPECT_EQ(split({llama3}, "Hello  world\n\n 1234567 it's OK!!\n"),
            (std::vector<std::string>{"Hello", " ", " world", "\n\n", " ", "123", "456", "7", " it",
                                      "'s", " OK", "!!\n"}));
  // U+0085 is whitespace for llama.cpp (PCRE2's \s lacks it).
  EXPECT_EQ(split({llama3},
                  "a\xC2\x85"
                  "b"),
            (std::vector<std::string>{"a",
                                      "\xC2\x85"
                                      "b"}));
  EXPECT_EQ(split({llama3},
                  "a\xC2\x85\xC2\x85"
                  "b"),
            (std::vector<std::string>{"a", "\xC2\x85",
                                      "\xC2\x85"
                                      "b"}));
  // Chained patterns split each earlier piece; gaps become pieces.
  EXPECT_EQ(split({"\\p{N}+", "[0-9][0-9][0-9]"}, "ab12345"),
            (std::vector<std::string>{"ab", "123", "45"}));
  EXPECT_EQ(split({"x"}, ""), std::vector<std::string>{});
  EXPECT_FALSE(RegexSplitter::Create({"(unclosed"}).ok());
}

// --- load errors ---------------------------------------------------------

void expect_error(const Writer& w, absl::StatusCode code, const std::string& needle) {
  auto t = FromWriter(w);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), code) << t.status();
  EXPECT_NE(t.status().message().find(needle), std::string_view::npos)
      << t.status() << " should mention " << needle;
}

TEST(SyntheticVocabErrorTest, MissingTokens) {
  Writer w;
  w.set("tokenizer.ggml.model", Value::str("llama"));
  expect_error(w, absl::StatusCode::kNotFound, "tokenizer.ggml.tokens");
}

TEST(SyntheticVocabErrorTest, MissingModel) {
  Writer w;
  w.set("tokenizer.ggml.tokens", Value::string_array({"a"}));
  expect_error(w, absl::StatusCode::kNotFound, "tokenizer.ggml.model");
}

TEST(SyntheticVocabErrorTest, UnsupportedModelAndPre) {
  Writer w = spm_writer(spm_base());
  w.set("tokenizer.ggml.model", Value::str("bert"));
  expect_error(w, absl::StatusCode::kUnimplemented, "'bert'");
  expect_error(bpe_writer(bpe_tokens(), {"a b"}, "my-new-pre"), absl::StatusCode::kUnimplemented,
               "'my-new-pre'");
}

TEST(SyntheticVocabErrorTest, BadArrays) {
  Writer w = spm_writer(spm_base());
  w.set("tokenizer.ggml.tokens", Value::u32(3));
  expect_error(w, absl::StatusCode::kInvalidArgument, "tokenizer.ggml.tokens");

  w = spm_writer(spm_base());
  w.set("tokenizer.ggml.tokens", Value::string_array({}));
  expect_error(w, absl::StatusCode::kInvalidArgument, "tokenizer.ggml.tokens");

  w = spm_writer(spm_base());
  w.set("tokenizer.ggml.token_type", Value::i32_array({1, 1}));
  expect_error(w, absl::StatusCode::kInvalidArgument, "tokenizer.ggml.token_type");

  w = spm_writer(spm_base());
  w.set("tokenizer.ggml.scores", Value::f32_array({0.0f}));
  expect_error(w, absl::StatusCode::kInvalidArgument, "tokenizer.ggml.scores");

  w = spm_writer(spm_base());
  w.set("tokenizer.ggml.scores", Value::str("nope"));
  expect_error(w, absl::StatusCode::kInvalidArgument, "tokenizer.ggml.scores");

  std::vector<Tok> dup = spm_base();
  dup.push_back({"a"});
  expect_error(spm_writer(dup), absl::StatusCode::kInvalidArgument, "duplicate token 'a'");

  Writer stripped;
  stripped.set("tokenizer.ggml.model", Value::str("gpt2"));
  stripped.set("tokenizer.ggml.pre", Value::str("gpt-2"));
  stripped.set("tokenizer.ggml.tokens", Value::string_array({"a", "b"}));
  expect_error(stripped, absl::StatusCode::kNotFound, "tokenizer.ggml.merges");
}

TEST(SyntheticVocabErrorTest, BadSpecialIds) {
  Writer w = spm_writer(spm_base());
  w.set("tokenizer.ggml.bos_token_id", Value::str("one"));
  expect_error(w, absl::StatusCode::kInvalidArgument, "tokenizer.ggml.bos_token_id");

  // An out-of-range stored id keeps the default, as in llama.cpp ...
  w = spm_writer(spm_base());
  w.set("tokenizer.ggml.eos_token_id", Value::u32(1000));
  auto t = FromWriter(w);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->eos_id(), 2);

  // ... but BOS must exist when the model asks for it.
  Writer bpe = bpe_writer(bpe_tokens(), {"a b"}, "llama-bpe");
  bpe.set("tokenizer.ggml.bos_token_id", Value::u32(1000));
  expect_error(bpe, absl::StatusCode::kInvalidArgument, "tokenizer.ggml.add_bos_token");
}

TEST(SyntheticVocabTest, IntegerScoresAndEmptyTokens) {
  Writer w = spm_writer(spm_base());
  w.set("tokenizer.ggml.scores", Value::i32_array({0, 0, 0, -1, -1, -1, -1}));
  w.set("tokenizer.ggml.tokens",
        Value::string_array({"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "", "c"}));
  auto t = FromWriter(w);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->token_text(5), "[EMPTY_5]");
}

}  // namespace
}  // namespace tandem::tokenizer
