// ServeNode, the logic behind the gRPC services, without a server: its states
// and the health they imply, requests refused while not serving, drain and
// shutdown, and the status an orchestrator reads.
#include "launcher/serve/serve_node.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace tandem::launcher::serve {
namespace {

using std::chrono::milliseconds;

ServeOptions tiny_options() {
  ServeOptions o;
  o.engine.model_path = TANDEM_TEST_DATA_DIR "/llama-tiny/tiny-f32.gguf";
  o.engine.n_threads = 1;
  o.engine.context_length = 256;
  o.engine.max_sequences = 2;
  return o;
}

v1::GenerateRequest greedy(int max_tokens) {
  v1::GenerateRequest r;
  r.set_text("Hello my name is");
  r.set_max_tokens(max_tokens);
  r.set_ignore_eos(true);
  r.mutable_sampling()->set_temperature(0);
  return r;
}

// Reads a stream to its end; the ids and the result.
std::pair<std::vector<int32_t>, engine::SequenceResult> drain_stream(engine::RequestStream& s) {
  std::vector<int32_t> ids;
  engine::StreamChunk chunk;
  const auto until = engine::SchedulerClock::now() + milliseconds(20000);
  while (s.read(&chunk, until)) {
    ids.insert(ids.end(), chunk.tokens.begin(), chunk.tokens.end());
    if (chunk.result) return {ids, *chunk.result};
  }
  ADD_FAILURE() << "the stream did not end";
  return {ids, {}};
}

TEST(ServeNode, StatesDriveHealthAndRefusals) {
  ServeOptions options = tiny_options();
  ServeNode node(options);
  std::vector<bool> health;
  node.set_on_serving([&](bool serving) { health.push_back(serving); });

  uint64_t seed = 0;
  auto early = node.generate(greedy(2), engine::SchedulerClock::time_point::max(), &seed);
  EXPECT_EQ(early.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(early.status().message().find("loading"), std::string::npos);
  EXPECT_EQ(node.status().state(), v1::SERVING_STATE_LOADING);
  EXPECT_EQ(node.model_info().status().code(), absl::StatusCode::kUnavailable);

  ASSERT_TRUE(node.load(options.engine).ok());
  EXPECT_EQ(health, std::vector<bool>{true});
  const v1::ClusterStatus serving = node.status();
  EXPECT_EQ(serving.state(), v1::SERVING_STATE_SERVING);
  ASSERT_EQ(serving.ranks_size(), 1);
  EXPECT_EQ(serving.ranks(0).health(), v1::RANK_HEALTH_HEALTHY);
  EXPECT_GT(serving.ranks(0).memory_total_bytes(), 0u);
  EXPECT_EQ(serving.max_sequences(), 2);

  auto info = node.model_info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->n_vocab(), 512);
  EXPECT_EQ(info->context_length(), 256);
  auto tokens = node.tokenize([] {
    v1::TokenizeRequest r;
    r.set_text("Hello");
    return r;
  }());
  ASSERT_TRUE(tokens.ok());
  EXPECT_EQ(tokens->token_ids_size(), tokens->pieces_size());

  // A request in flight survives the drain; new ones are refused.
  auto running = node.generate(greedy(100), engine::SchedulerClock::time_point::max(), &seed);
  ASSERT_TRUE(running.ok()) << running.status();
  std::thread drainer([&] {
    const v1::DrainResponse r = node.drain(engine::SchedulerClock::now() + milliseconds(20000));
    EXPECT_EQ(r.remaining_requests(), 0);
  });
  const auto until = engine::SchedulerClock::now() + milliseconds(5000);
  while (node.status().state() != v1::SERVING_STATE_DRAINING &&
         engine::SchedulerClock::now() < until) {
    std::this_thread::sleep_for(milliseconds(1));
  }
  EXPECT_EQ(node.status().state(), v1::SERVING_STATE_DRAINING);
  auto refused = node.generate(greedy(2), engine::SchedulerClock::time_point::max(), &seed);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("draining"), std::string::npos);
  const auto [ids, result] = drain_stream(**running);
  EXPECT_EQ(ids.size(), 100u);
  EXPECT_EQ(result.reason, engine::StopReason::kLength);
  drainer.join();
  EXPECT_EQ(health, (std::vector<bool>{true, false}));

  node.request_shutdown(1.5);
  const ServeNode::StopCause cause = node.wait_for_stop();
  EXPECT_TRUE(cause.failure.ok());
  EXPECT_EQ(cause.drain_timeout_seconds, 1.5);
  node.stop(cause);
  EXPECT_EQ(node.status().state(), v1::SERVING_STATE_STOPPING);
}

TEST(ServeNode, BadRequestsAreRefusedWithTheField) {
  ServeOptions options = tiny_options();
  ServeNode node(options);
  ASSERT_TRUE(node.load(options.engine).ok());
  v1::GenerateRequest r = greedy(2);
  r.mutable_sampling()->set_top_k(-3);
  uint64_t seed = 0;
  auto s = node.generate(r, engine::SchedulerClock::time_point::max(), &seed);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("top_k"), std::string::npos);
  // The seed the request names is the one used; without one, a fresh one.
  r = greedy(2);
  r.mutable_sampling()->set_seed(77);
  auto seeded = node.generate(r, engine::SchedulerClock::time_point::max(), &seed);
  ASSERT_TRUE(seeded.ok());
  EXPECT_EQ(seed, 77u);
  drain_stream(**seeded);
}

TEST(ServeNode, ALoadFailureSaysWhy) {
  ServeOptions options = tiny_options();
  options.engine.model_path = "/nonexistent/model.gguf";
  ServeNode node(options);
  const absl::Status s = node.load(options.engine);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("/nonexistent/model.gguf"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace tandem::launcher::serve
