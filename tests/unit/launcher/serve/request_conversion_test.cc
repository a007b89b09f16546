// The bad-request corpus against the pure conversion: each request gets
// INVALID_ARGUMENT naming its field; good ones become the SequenceRequest the
// scheduler runs, with the API's defaults.
#include "launcher/serve/request_conversion.h"

#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/gguf/gguf.h"

namespace tandem::launcher::serve {
namespace {

class RequestConversion : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto file = gguf::File::Open(TANDEM_TEST_DATA_DIR "/llama-tiny/tiny-f32.gguf");
    ASSERT_TRUE(file.ok()) << file.status();
    auto tok = tokenizer::Tokenizer::FromGguf(*file);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = std::move(*tok).release();
  }
  static void TearDownTestSuite() { delete tokenizer_; }

  absl::StatusOr<engine::SequenceRequest> convert(const v1::GenerateRequest& r) {
    return to_sequence_request(r, *tokenizer_, {512, 64}, 99);
  }
  static v1::GenerateRequest good() {
    v1::GenerateRequest r;
    r.set_text("Hello my name is");
    r.set_max_tokens(8);
    return r;
  }
  static tokenizer::Tokenizer* tokenizer_;
};
tokenizer::Tokenizer* RequestConversion::tokenizer_ = nullptr;

TEST_F(RequestConversion, BadRequestCorpusNamesEachField) {
  struct Case {
    std::string name;
    std::function<void(v1::GenerateRequest&)> edit;
    std::string field;  // expected at the start of the message
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<Case> corpus = {
      {"no prompt", [](auto& r) { r.clear_prompt(); }, "prompt: set text or token_ids"},
      {"empty text", [](auto& r) { r.set_text(""); }, "prompt.text: empty"},
      {"empty ids", [](auto& r) { r.mutable_token_ids(); }, "prompt.token_ids: empty"},
      {"unknown id", [](auto& r) { r.mutable_token_ids()->add_ids(512); }, "prompt: token id 512"},
      {"negative id", [](auto& r) { r.mutable_token_ids()->add_ids(-3); }, "prompt: token id -3"},
      {"prompt past context",
       [](auto& r) {
         for (int i = 0; i < 65; ++i) r.mutable_token_ids()->add_ids(5);
       },
       "prompt: 65 tokens exceed the context length of 64"},
      {"negative max_tokens", [](auto& r) { r.set_max_tokens(-1); }, "max_tokens: -1 is negative"},
      {"max_tokens past context", [](auto& r) { r.set_max_tokens(60); }, "max_tokens: 60 after"},
      {"huge max_tokens", [](auto& r) { r.set_max_tokens(1 << 30); }, "max_tokens:"},
      {"negative temperature", [](auto& r) { r.mutable_sampling()->set_temperature(-0.5f); },
       "sampling parameter temperature"},
      {"NaN temperature", [=](auto& r) { r.mutable_sampling()->set_temperature(nan); },
       "sampling parameter temperature"},
      {"absurd temperature", [](auto& r) { r.mutable_sampling()->set_temperature(1e9f); },
       "sampling parameter temperature"},
      {"negative top_k", [](auto& r) { r.mutable_sampling()->set_top_k(-1); },
       "sampling parameter top_k"},
      {"top_p above 1", [](auto& r) { r.mutable_sampling()->set_top_p(1.5f); },
       "sampling parameter top_p"},
      {"negative min_p", [](auto& r) { r.mutable_sampling()->set_min_p(-0.1f); },
       "sampling parameter min_p"},
      {"zero repeat_penalty", [](auto& r) { r.mutable_sampling()->set_repeat_penalty(0); },
       "sampling parameter repeat_penalty"},
      {"absurd frequency_penalty",
       [](auto& r) { r.mutable_sampling()->set_frequency_penalty(1e6f); },
       "sampling parameter frequency_penalty"},
      {"absurd presence_penalty", [](auto& r) { r.mutable_sampling()->set_presence_penalty(-1e6f); },
       "sampling parameter presence_penalty"},
      {"huge repeat_last_n", [](auto& r) { r.mutable_sampling()->set_repeat_last_n(1 << 30); },
       "sampling parameter repeat_last_n"},
      {"empty stop", [](auto& r) { r.add_stop(""); }, "stop[0]: empty"},
      {"too many stops",
       [](auto& r) {
         for (int i = 0; i < 17; ++i) r.add_stop("x");
       },
       "stop: 17 stop strings"},
      {"long stop", [](auto& r) { r.add_stop(std::string(257, 'a')); }, "stop[0]: 257 bytes"},
      {"long request_id", [](auto& r) { r.set_request_id(std::string(129, 'a')); },
       "request_id: 129 bytes"},
  };
  for (const Case& c : corpus) {
    v1::GenerateRequest r = good();
    if (c.name.find("id") != std::string::npos && c.name != "long request_id") r.clear_prompt();
    if (c.name == "prompt past context") r.clear_max_tokens();
    c.edit(r);
    const absl::StatusOr<engine::SequenceRequest> out = convert(r);
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_EQ(out.status().message().rfind(c.field, 0), 0u)
        << c.name << ": '" << out.status().message() << "' should start with '" << c.field << "'";
  }
}

TEST_F(RequestConversion, TextPromptTakesTheApiDefaults) {
  v1::GenerateRequest r = good();
  r.clear_max_tokens();
  auto out = convert(r);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->prompt, tokenizer_->encode("Hello my name is"));
  // 128 does not fit a 64-token context after the prompt: what is left.
  EXPECT_EQ(out->max_tokens, 64 - static_cast<int32_t>(out->prompt.size()));
  EXPECT_EQ(out->sampling.temperature, engine::SamplingParams().temperature);
  EXPECT_EQ(out->sampling.seed, 99u);
  EXPECT_TRUE(out->stop_at_eog);
}

TEST_F(RequestConversion, FieldsCarryOver) {
  v1::GenerateRequest r;
  r.mutable_token_ids()->add_ids(1);
  r.mutable_token_ids()->add_ids(7);
  r.set_max_tokens(3);
  r.set_ignore_eos(true);
  r.add_stop("\n");
  r.set_request_id("job-1");
  v1::SamplingParams* s = r.mutable_sampling();
  s->set_temperature(0);
  s->set_top_k(5);
  s->set_seed(42);
  auto out = convert(r);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->prompt, (std::vector<int32_t>{1, 7}));
  EXPECT_EQ(out->max_tokens, 3);
  EXPECT_FALSE(out->stop_at_eog);
  EXPECT_EQ(out->stop, std::vector<std::string>{"\n"});
  EXPECT_EQ(out->id, "job-1");
  EXPECT_EQ(out->sampling.temperature, 0.0f);
  EXPECT_EQ(out->sampling.top_k, 5);
  EXPECT_EQ(out->sampling.seed, 42u);
}

TEST_F(RequestConversion, NoBosDropsTheBos) {
  v1::GenerateRequest r = good();
  r.set_no_bos(true);
  auto out = convert(r);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->prompt, tokenizer_->encode("Hello my name is", {.add_bos = false}));
}

TEST(ResultConversion, FinishedAndStatus) {
  engine::SequenceResult r;
  r.reason = engine::StopReason::kStopString;
  r.stop_string = "END";
  r.prompt_tokens = 4;
  r.completion_tokens = 2;
  const v1::Finished f = to_finished(r, 7);
  EXPECT_EQ(f.reason(), v1::FINISH_REASON_STOP_STRING);
  EXPECT_EQ(f.stop_string(), "END");
  EXPECT_EQ(f.usage().prompt_tokens(), 4);
  EXPECT_EQ(f.usage().completion_tokens(), 2);
  EXPECT_EQ(f.seed(), 7u);
  EXPECT_TRUE(stream_status(r).ok());
  r.reason = engine::StopReason::kEndOfGeneration;
  EXPECT_EQ(to_finished(r, 0).reason(), v1::FINISH_REASON_STOP);
  r.reason = engine::StopReason::kCancelled;
  r.status = absl::CancelledError("cancelled by the caller");
  EXPECT_EQ(stream_status(r).code(), absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace tandem::launcher::serve
