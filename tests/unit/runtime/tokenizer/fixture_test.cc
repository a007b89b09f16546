// Golden tests against llama.cpp 3f545becc: every line of
// tokenizer-llama{2,3}.jsonl (see tests/data/tokenizer/README.md).
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/runtime/tokenizer/test_vocabs.h"

namespace tandem::tokenizer {
namespace {

struct Case {
  std::string text;
  std::vector<int32_t> ids_no_bos;
  std::vector<int32_t> ids_with_bos;
  std::string detok;  // llama_detokenize(ids_no_bos)
};

std::vector<Case> read_cases(const std::string& name) {
  std::ifstream in(testing::data_path(name));
  EXPECT_TRUE(in.good()) << name;
  std::vector<Case> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto json = nlohmann::json::parse(line);
    Case c;
    c.text = json.at("text").get<std::string>();
    c.ids_no_bos = json.at("ids_no_bos").get<std::vector<int32_t>>();
    c.ids_with_bos = json.at("ids_with_bos").get<std::vector<int32_t>>();
    c.detok = json.contains("detok") ? json.at("detok").get<std::string>() : c.text;
    cases.push_back(std::move(c));
  }
  return cases;
}

void check_all(const Tokenizer& tokenizer, const std::string& name) {
  const std::vector<Case> cases = read_cases(name);
  ASSERT_EQ(cases.size(), 30u) << name;
  for (const Case& c : cases) {
    SCOPED_TRACE("text: \"" + c.text + "\"");
    EXPECT_EQ(tokenizer.encode(c.text, {.add_bos = false}), c.ids_no_bos);
    EXPECT_EQ(tokenizer.encode(c.text, {.add_bos = true}), c.ids_with_bos);
    EXPECT_EQ(tokenizer.decode(c.ids_no_bos), c.detok);
  }
}

TEST(TokenizerFixtureTest, Llama2MatchesLlamaCpp) {
  const Tokenizer* tokenizer = testing::llama2();
  ASSERT_NE(tokenizer, nullptr);
  check_all(*tokenizer, "tokenizer-llama2.jsonl");
}

TEST(TokenizerFixtureTest, Llama3MatchesLlamaCpp) {
  const Tokenizer* tokenizer = testing::llama3();
  ASSERT_NE(tokenizer, nullptr);
  check_all(*tokenizer, "tokenizer-llama3.jsonl");
}

}  // namespace
}  // namespace tandem::tokenizer
