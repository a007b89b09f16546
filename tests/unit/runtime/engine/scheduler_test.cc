// The scheduler on the real tiny model: greedy streams equal engine::generate
// (one request and several at once), stop strings, limits, cancellation,
// deadlines, draining and validation.
#include "runtime/engine/scheduler.h"

#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/engine/generate.h"

namespace tandem::engine {
namespace {

using std::chrono::milliseconds;

constexpr char kModel[] = TANDEM_TEST_DATA_DIR "/llama-tiny/tiny-f32.gguf";

std::unique_ptr<Engine> load(int32_t max_sequences, int64_t batch = 16) {
  EngineOptions o;
  o.model_path = kModel;
  o.n_threads = 2;
  o.context_length = 256;
  o.max_sequences = max_sequences;
  o.max_batch_tokens = batch;
  auto e = Engine::Load(o);
  EXPECT_TRUE(e.ok()) << e.status();
  return std::move(*e);
}

SamplingParams greedy() {
  SamplingParams p;
  p.temperature = 0;
  return p;
}

struct Collected {
  std::vector<int32_t> tokens;
  std::string text;
  SequenceResult result;
  int chunks = 0;
};

Collected collect(RequestStream& stream, milliseconds timeout = milliseconds(20000)) {
  Collected c;
  const auto until = SchedulerClock::now() + timeout;
  StreamChunk chunk;
  while (SchedulerClock::now() < until) {
    if (!stream.read(&chunk, until)) break;
    ++c.chunks;
    c.tokens.insert(c.tokens.end(), chunk.tokens.begin(), chunk.tokens.end());
    c.text += chunk.text;
    if (chunk.result) {
      c.result = *chunk.result;
      return c;
    }
  }
  ADD_FAILURE() << "the stream did not end in time";
  return c;
}

std::vector<int32_t> generate_alone(Engine& e, const std::vector<int32_t>& prompt, int32_t n,
                                    const SamplingParams& sampling, bool stop_at_eog = false) {
  GenerateRequest r;
  r.prompt = prompt;
  r.max_tokens = n;
  r.sampling = sampling;
  r.stop_at_eog = stop_at_eog;
  auto out = generate(e, r, [](int32_t) { return true; });
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? out->tokens : std::vector<int32_t>{};
}

SequenceRequest request(std::vector<int32_t> prompt, int32_t n, SamplingParams s = greedy()) {
  SequenceRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = n;
  r.sampling = s;
  r.stop_at_eog = false;
  return r;
}

TEST(Scheduler, OneGreedyRequestEqualsGenerate) {
  auto e = load(2);
  const std::vector<int32_t> prompt = e->tokenizer().encode("Hello my name is");
  const std::vector<int32_t> expected = generate_alone(*e, prompt, 24, greedy());
  EngineRunner runner(*e, 2);
  Scheduler scheduler(runner);
  auto stream = scheduler.submit(request(prompt, 24));
  ASSERT_TRUE(stream.ok()) << stream.status();
  Collected c = collect(**stream);
  EXPECT_EQ(c.tokens, expected);
  EXPECT_EQ(c.result.reason, StopReason::kLength);
  EXPECT_EQ(c.result.completion_tokens, 24);
  EXPECT_EQ(c.result.prompt_tokens, static_cast<int32_t>(prompt.size()));
  tokenizer::StreamDecoder d(e->tokenizer());
  std::string text;
  for (int32_t t : expected) text += d.push(t);
  EXPECT_EQ(c.text, text + d.flush());
}

TEST(Scheduler, ConcurrentRequestsEachEqualTheirSoloRun) {
  auto e = load(4, 8);
  const std::vector<std::string> texts = {"Hello my name is", "The capital of France",
                                          "Once upon a time there was a long prompt that takes "
                                          "several chunks to read",
                                          "a"};
  SamplingParams sampled;
  sampled.temperature = 0.9f;
  sampled.seed = 1234;
  std::vector<std::vector<int32_t>> prompts, expected;
  for (size_t i = 0; i < texts.size(); ++i) {
    prompts.push_back(e->tokenizer().encode(texts[i]));
    expected.push_back(generate_alone(*e, prompts[i], 20, i == 3 ? sampled : greedy()));
  }
  EngineRunner runner(*e, 4);
  Scheduler scheduler(runner);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (size_t i = 0; i < texts.size(); ++i) {
    auto s = scheduler.submit(request(prompts[i], 20, i == 3 ? sampled : greedy()));
    ASSERT_TRUE(s.ok()) << s.status();
    streams.push_back(*s);
  }
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(collect(*streams[i]).tokens, expected[i]) << "request " << i;
  }
  ASSERT_TRUE(scheduler.wait_idle(SchedulerClock::now() + milliseconds(5000)));
  EXPECT_EQ(scheduler.stats().requests_total, texts.size());
  EXPECT_EQ(scheduler.stats().active, 0);
}

TEST(Scheduler, StopStringCutsTheText) {
  auto e = load(1);
  const std::vector<int32_t> prompt = e->tokenizer().encode("Hello my name is");
  const std::vector<int32_t> full = generate_alone(*e, prompt, 16, greedy());
  // prefix[k]: the streamed text of the first k tokens. Pick the first k
  // whose next three bytes occur nowhere earlier: that is the stop, and the
  // stream must end with exactly prefix[k].
  tokenizer::StreamDecoder d(e->tokenizer());
  std::vector<std::string> prefix = {""};
  for (int32_t t : full) prefix.push_back(prefix.back() + d.push(t));
  const std::string& text = prefix.back();
  std::string stop, before_stop;
  for (size_t k = 1; k + 1 < prefix.size() && stop.empty(); ++k) {
    if (prefix[k].size() + 3 > text.size()) break;
    const std::string candidate = text.substr(prefix[k].size(), 3);
    if (text.find(candidate) == prefix[k].size()) {
      stop = candidate;
      before_stop = prefix[k];
    }
  }
  ASSERT_FALSE(stop.empty()) << "no usable stop string in " << text;
  EngineRunner runner(*e, 1);
  Scheduler scheduler(runner);
  SequenceRequest r = request(prompt, 16);
  r.stop = {stop};
  auto stream = scheduler.submit(r);
  ASSERT_TRUE(stream.ok());
  Collected c = collect(**stream);
  EXPECT_EQ(c.result.reason, StopReason::kStopString);
  EXPECT_EQ(c.result.stop_string, stop);
  EXPECT_EQ(c.text, before_stop);
}

TEST(Scheduler, FullSlotsAreResourceExhaustedAndCancelFreesThem) {
  auto e = load(1);
  EngineRunner runner(*e, 1);
  Scheduler scheduler(runner);
  const std::vector<int32_t> prompt = e->tokenizer().encode("Hello");
  auto first = scheduler.submit(request(prompt, 200));
  ASSERT_TRUE(first.ok());
  auto second = scheduler.submit(request(prompt, 4));
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  StreamChunk chunk;
  ASSERT_TRUE((*first)->read(&chunk, SchedulerClock::now() + milliseconds(10000)));
  (*first)->cancel();
  Collected c = collect(**first);
  EXPECT_EQ(c.result.reason, StopReason::kCancelled);
  EXPECT_EQ(c.result.status.code(), absl::StatusCode::kCancelled);
  EXPECT_LT(c.result.completion_tokens, 200);
  ASSERT_TRUE(scheduler.wait_idle(SchedulerClock::now() + milliseconds(5000)));
  auto third = scheduler.submit(request(prompt, 4));
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(collect(**third).tokens.size(), 4u);
}

TEST(Scheduler, DeadlineEndsTheRequest) {
  auto e = load(1);
  EngineRunner runner(*e, 1);
  Scheduler scheduler(runner);
  SequenceRequest r = request(e->tokenizer().encode("Hello"), 250);
  r.deadline = SchedulerClock::now() + milliseconds(30);
  auto stream = scheduler.submit(r);
  ASSERT_TRUE(stream.ok());
  Collected c = collect(**stream);
  EXPECT_EQ(c.result.reason, StopReason::kDeadline);
  EXPECT_EQ(c.result.status.code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(Scheduler, ZeroMaxTokensEndsAtOnce) {
  auto e = load(1);
  EngineRunner runner(*e, 1);
  Scheduler scheduler(runner);
  auto stream = scheduler.submit(request({1, 2, 3}, 0));
  ASSERT_TRUE(stream.ok());
  Collected c = collect(**stream);
  EXPECT_EQ(c.result.reason, StopReason::kLength);
  EXPECT_TRUE(c.tokens.empty());
  EXPECT_EQ(c.result.prompt_tokens, 3);
}

TEST(Scheduler, DrainRefusesNewRequestsAndAbortEndsRunningOnes) {
  auto e = load(2);
  EngineRunner runner(*e, 2);
  Scheduler scheduler(runner);
  auto running = scheduler.submit(request({1, 2, 3}, 250));
  ASSERT_TRUE(running.ok());
  scheduler.stop_accepting();
  EXPECT_EQ(scheduler.submit(request({1}, 1)).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(scheduler.stats().accepting);
  scheduler.abort_all(absl::UnavailableError("shutting down"));
  Collected c = collect(**running);
  EXPECT_EQ(c.result.reason, StopReason::kAborted);
  EXPECT_EQ(c.result.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(scheduler.wait_idle(SchedulerClock::now() + milliseconds(5000)));
}

TEST(Scheduler, DestructionEndsWhatStillRuns) {
  auto e = load(1);
  std::shared_ptr<RequestStream> stream;
  {
    EngineRunner runner(*e, 1);
    Scheduler scheduler(runner);
    auto s = scheduler.submit(request({1, 2, 3}, 250));
    ASSERT_TRUE(s.ok());
    stream = *s;
  }
  StreamChunk chunk;
  bool ended = false;
  while (stream->read(&chunk, SchedulerClock::now() + milliseconds(100))) {
    if (chunk.result) ended = chunk.result->reason == StopReason::kAborted;
  }
  EXPECT_TRUE(ended);
}

TEST(SequenceValidation, NamesTheField) {
  struct Case {
    SequenceRequest r;
    std::string field;
  };
  std::vector<Case> cases;
  auto add = [&](std::string field, auto edit) {
    SequenceRequest r = request({1, 2, 3}, 8);
    edit(r);
    cases.push_back({r, field});
  };
  add("prompt: empty", [](SequenceRequest& r) { r.prompt.clear(); });
  add("prompt: token id 512", [](SequenceRequest& r) { r.prompt[1] = 512; });
  add("prompt: token id -1", [](SequenceRequest& r) { r.prompt[0] = -1; });
  add("prompt: 300 tokens exceed", [](SequenceRequest& r) { r.prompt.assign(300, 1); });
  add("max_tokens: -1", [](SequenceRequest& r) { r.max_tokens = -1; });
  add("max_tokens: 254 after", [](SequenceRequest& r) { r.max_tokens = 254; });
  add("temperature", [](SequenceRequest& r) { r.sampling.temperature = -1; });
  add("top_p", [](SequenceRequest& r) { r.sampling.top_p = 2; });
  add("repeat_last_n", [](SequenceRequest& r) { r.sampling.repeat_last_n = -5; });
  add("stop: 17", [](SequenceRequest& r) { r.stop.assign(17, "x"); });
  add("stop[1]: empty", [](SequenceRequest& r) { r.stop = {"a", ""}; });
  add("stop[0]: 300 bytes", [](SequenceRequest& r) { r.stop = {std::string(300, 'a')}; });
  for (const Case& c : cases) {
    const absl::Status s = validate(c.r, 512, 256);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(s.message().find(c.field), std::string::npos) << s.message() << " vs " << c.field;
  }
  EXPECT_TRUE(validate(request({1, 2, 3}, 253), 512, 256).ok());
}

}  // namespace
}  // namespace tandem::engine
