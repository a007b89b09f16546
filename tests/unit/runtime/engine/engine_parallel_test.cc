// Every TP x PP layout of the engine gives the single-rank answer: the ranks
// are threads of this process over the `local` transport, rank 0 drives and
// the others serve from run_worker(). Also: bad input leaves the cluster
// serving, a lost rank is an error within the deadline, and a rank that
// cannot load fails the load of every rank.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/generate.h"
#include "transport/local/local_world.h"

namespace tandem::engine {
namespace {

const std::string kDir = std::string(TANDEM_TEST_DATA_DIR) + "/llama-tiny/";
const std::vector<int32_t> kPrompt = {1, 150, 59, 102, 338, 11, 42, 7, 99, 100, 300, 17, 5};

struct GreedyRun {
  std::vector<int32_t> tokens;
  std::vector<float> logits;
};

EngineOptions options_for(const std::string& model, int tp, int pp) {
  EngineOptions o;
  o.model_path = kDir + model;
  o.n_threads = 1;
  o.max_batch_tokens = 48;
  o.max_sequences = 2;
  o.tp = tp;
  o.pp = pp;
  o.step_timeout = std::chrono::milliseconds(20000);
  o.load_timeout = std::chrono::milliseconds(20000);
  return o;
}

// Logits of the prompt (one batch) and then of each of `forced` fed one
// decode step at a time: the same contexts on every layout, whatever each
// layout would have sampled.
std::vector<float> forced_logits(Engine& e, const std::vector<int32_t>& forced) {
  std::vector<float> out;
  EXPECT_TRUE(e.open_sequence(1).ok());
  std::vector<int32_t> positions(kPrompt.size()), seq(kPrompt.size(), 1);
  for (size_t i = 0; i < positions.size(); ++i) positions[i] = static_cast<int32_t>(i);
  const std::vector<uint8_t> all(kPrompt.size(), 1);
  auto prompt = e.forward({kPrompt, positions, seq, all});
  EXPECT_TRUE(prompt.ok()) << prompt.status();
  if (!prompt.ok()) return out;
  out.assign(prompt->begin(), prompt->end());
  for (size_t k = 0; k < forced.size(); ++k) {
    const int32_t pos = static_cast<int32_t>(kPrompt.size() + k);
    const int32_t one = 1;
    auto step = e.forward({std::span(&forced[k], 1), std::span(&pos, 1), std::span(&one, 1), {}});
    EXPECT_TRUE(step.ok()) << step.status();
    if (!step.ok()) break;
    out.insert(out.end(), step->begin(), step->end());
  }
  EXPECT_TRUE(e.close_sequence(1).ok());
  return out;
}

// Greedy generation of 32 tokens by rank 0 of a tp x pp cluster (or one rank
// without a communicator when tp == pp == 0), then the logits of `forced`.
GreedyRun generate_on(const std::string& model, int tp, int pp,
                      const std::vector<int32_t>& forced = {}) {
  GenerateRequest request;
  request.prompt = kPrompt;
  request.max_tokens = 32;
  request.stop_at_eog = false;
  GreedyRun run;
  auto drive = [&](Engine& e) {
    auto result = generate(e, request, [](int32_t) { return true; });
    EXPECT_TRUE(result.ok()) << result.status();
    if (result.ok()) run.tokens = result->tokens;
    run.logits = forced_logits(e, forced.empty() ? run.tokens : forced);
  };
  if (tp == 0) {
    auto e = Engine::Load(options_for(model, 1, 1));
    EXPECT_TRUE(e.ok()) << e.status();
    if (e.ok()) drive(**e);
    return run;
  }
  auto comms = transport::make_local_world(tp * pp);
  std::vector<std::thread> workers;
  for (int r = 1; r < tp * pp; ++r) {
    workers.emplace_back([&, r] {
      EngineOptions o = options_for(model, tp, pp);
      o.comm = comms[r].get();
      auto e = Engine::Load(o);
      ASSERT_TRUE(e.ok()) << "rank " << r << ": " << e.status();
      EXPECT_TRUE((*e)->run_worker().ok());
    });
  }
  EngineOptions o = options_for(model, tp, pp);
  o.comm = comms[0].get();
  auto e = Engine::Load(o);
  EXPECT_TRUE(e.ok()) << e.status();
  if (e.ok()) {
    drive(**e);
    EXPECT_TRUE((*e)->shutdown_workers().ok());
  }
  for (auto& t : workers) t.join();
  return run;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0.0f;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

struct Layout {
  int tp;
  int pp;
};

class EngineParallel : public ::testing::TestWithParam<std::tuple<std::string, Layout>> {};

TEST_P(EngineParallel, MatchesOneRank) {
  const auto& [model, layout] = GetParam();
  static std::map<std::string, GreedyRun> single;  // one single-rank run per model
  if (!single.count(model)) single[model] = generate_on(model, 0, 0);
  const GreedyRun& want = single[model];
  const GreedyRun got = generate_on(model, layout.tp, layout.pp, want.tokens);
  ASSERT_EQ(want.tokens.size(), 32u);
  // Q8_0 logits can differ by one quantization step (below), and this random
  // model has near ties, so only F32 must sample the very same tokens.
  if (model == "tiny-f32.gguf") {
    EXPECT_EQ(got.tokens, want.tokens);
  }
  ASSERT_EQ(got.logits.size(), want.logits.size());
  ASSERT_EQ(got.logits.size(), (kPrompt.size() + 32) * 512);
  // F32: only the order of the partial sums differs. Q8_0: that order can
  // also move an activation across a rounding boundary of its 8-bit
  // quantization, which shifts a logit by about one quantization step
  // (around 1e-2 here).
  const float tolerance = model == "tiny-f32.gguf" ? 1e-4f : 3e-2f;
  EXPECT_LE(max_abs_diff(got.logits, want.logits), tolerance);
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, EngineParallel,
    ::testing::Combine(::testing::Values("tiny-f32.gguf", "tiny-q8_0.gguf"),
                       ::testing::Values(Layout{2, 1}, Layout{1, 2}, Layout{2, 2}, Layout{4, 1},
                                         Layout{1, 4}, Layout{4, 2})),
    [](const auto& info) {
      std::string name = std::get<0>(info.param) == "tiny-f32.gguf" ? "f32" : "q8_0";
      return name + "_tp" + std::to_string(std::get<1>(info.param).tp) + "_pp" +
             std::to_string(std::get<1>(info.param).pp);
    });

// Loads a tp x pp cluster whose workers run `worker` (default: run_worker),
// then hands rank 0 to `drive`.
void with_cluster(int tp, int pp, const std::function<void(Engine&)>& drive,
                  const std::function<void(int, Engine&)>& worker = {}) {
  auto comms = transport::make_local_world(tp * pp);
  std::vector<std::thread> workers;
  for (int r = 1; r < tp * pp; ++r) {
    workers.emplace_back([&, r] {
      EngineOptions o = options_for("tiny-f32.gguf", tp, pp);
      o.comm = comms[r].get();
      auto e = Engine::Load(o);
      ASSERT_TRUE(e.ok()) << e.status();
      if (worker) {
        worker(r, **e);
      } else {
        EXPECT_TRUE((*e)->run_worker().ok());
      }
    });
  }
  EngineOptions o = options_for("tiny-f32.gguf", tp, pp);
  o.comm = comms[0].get();
  o.step_timeout = std::chrono::milliseconds(3000);
  auto e = Engine::Load(o);
  ASSERT_TRUE(e.ok()) << e.status();
  drive(**e);
  (*e)->shutdown_workers().IgnoreError();
  for (auto& t : workers) t.join();
}

TEST(EngineCluster, BadInputIsRefusedAndTheClusterServesOn) {
  with_cluster(2, 2, [](Engine& e) {
    ASSERT_TRUE(e.open_sequence(0).ok());
    const std::vector<int32_t> bad = {1, 999999};
    const std::vector<int32_t> pos = {0, 1};
    const std::vector<int32_t> seq = {0, 0};
    auto refused = e.forward({bad, pos, seq, {}});
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
    const std::vector<int32_t> unopened = {1, 1};
    auto closed = e.forward({std::span(kPrompt).first(2), pos, unopened, {}});
    EXPECT_EQ(closed.status().code(), absl::StatusCode::kInvalidArgument);
    auto ok = e.forward({std::span(kPrompt).first(2), pos, seq, {}});
    EXPECT_TRUE(ok.ok()) << ok.status();
    EXPECT_EQ(ok->size(), 512u);
    EXPECT_TRUE(e.close_sequence(0).ok());
  });
}

TEST(EngineCluster, ALostWorkerIsAnErrorWithinTheDeadline) {
  with_cluster(
      2, 1,
      [](Engine& e) {
        ASSERT_TRUE(e.open_sequence(0).ok());
        const std::vector<int32_t> pos = {0};
        const std::vector<int32_t> seq = {0};
        const auto start = std::chrono::steady_clock::now();
        auto lost = e.forward({std::span(kPrompt).first(1), pos, seq, {}});
        EXPECT_FALSE(lost.ok());
        EXPECT_TRUE(absl::IsUnavailable(lost.status()) || absl::IsDeadlineExceeded(lost.status()))
            << lost.status();
        EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
        // Unusable afterwards, with the reason.
        EXPECT_FALSE(e.forward({std::span(kPrompt).first(1), pos, seq, {}}).ok());
      },
      [](int, Engine&) { /* the worker's engine is destroyed at once: a dead rank */ });
}

TEST(EngineCluster, ARankThatCannotLoadFailsEveryRank) {
  auto comms = transport::make_local_world(2);
  std::promise<absl::Status> worker_status;
  std::thread worker([&] {
    EngineOptions o = options_for("tiny-f32.gguf", 2, 1);
    o.model_path = kDir + "missing.gguf";
    o.stream_missing_model = false;
    o.comm = comms[1].get();
    worker_status.set_value(Engine::Load(o).status());
  });
  EngineOptions o = options_for("tiny-f32.gguf", 2, 1);
  o.comm = comms[0].get();
  auto e = Engine::Load(o);
  worker.join();
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("rank 1 failed to load"), std::string::npos) << e.status();
  EXPECT_NE(e.status().message().find("missing.gguf"), std::string::npos) << e.status();
  EXPECT_FALSE(worker_status.get_future().get().ok());
}

// Bytes this thread has read through read(2)/pread(2) so far, as the kernel
// counts them.
uint64_t thread_read_bytes() {
  std::ifstream in("/proc/thread-self/io");
  std::string key;
  uint64_t value = 0;
  while (in >> key >> value) {
    if (key == "rchar:") return value;
  }
  ADD_FAILURE() << "no rchar in /proc/thread-self/io";
  return 0;
}

// A TP=2 rank reads about half of the weights (plus the replicated norms and
// the file's header), measured by the kernel's count of the bytes each rank's
// thread read while it loaded.
TEST(EngineCluster, ATensorParallelRankReadsOnlyItsHalf) {
  auto comms = transport::make_local_world(2);
  std::vector<uint64_t> read(2, 0);
  std::vector<uint64_t> counted(2, 0);
  auto load = [&](int r) {
    EngineOptions o = options_for("tiny-f32.gguf", 2, 1);
    o.comm = comms[r].get();
    const uint64_t before = thread_read_bytes();
    auto e = Engine::Load(o);
    read[r] = thread_read_bytes() - before;
    ASSERT_TRUE(e.ok()) << e.status();
    counted[r] = (*e)->load_stats().bytes;
    if (r == 0) {
      EXPECT_TRUE((*e)->shutdown_workers().ok());
    } else {
      EXPECT_TRUE((*e)->run_worker().ok());
    }
  };
  std::thread worker(load, 1);
  load(0);
  worker.join();
  auto file = gguf::File::Open(kDir + "tiny-f32.gguf");
  ASSERT_TRUE(file.ok());
  uint64_t weights = 0, replicated = 0;
  for (const gguf::TensorInfo& t : file->tensors()) {
    weights += t.n_bytes;
    if (t.dims.size() == 1) replicated += t.n_bytes;  // norms
  }
  // The header (metadata, tokenizer) is parsed in reads of up to 1 MiB.
  const uint64_t header = file->tensors().front().file_offset + (1u << 20);
  for (int r = 0; r < 2; ++r) {
    EXPECT_LE(counted[r], (weights - replicated) / 2 + replicated) << "rank " << r;
    EXPECT_LE(read[r], (weights - replicated) / 2 + replicated + header)
        << "rank " << r << " read " << read[r] << " of " << weights << " weight bytes";
    EXPECT_GE(read[r], counted[r]);
  }
}

// Ranks whose box has no copy of the model stream their shards from rank 0:
// the same logits as one rank, the same shard bytes as a local load, and
// nothing read from disk by the fetching ranks' threads.
TEST(EngineCluster, RanksWithoutTheFileStreamTheirShardsFromRankZero) {
  const std::string model = "tiny-f32.gguf";
  const std::vector<int32_t> forced = {5, 77, 300, 12};
  std::vector<float> reference;
  {
    auto e = Engine::Load(options_for(model, 1, 1));
    ASSERT_TRUE(e.ok()) << e.status();
    reference = forced_logits(**e, forced);
  }
  constexpr int kTp = 2, kPp = 2;
  auto comms = transport::make_local_world(kTp * kPp);
  std::vector<uint64_t> read(kTp * kPp, 0), loaded(kTp * kPp, 0);
  std::vector<std::thread> workers;
  for (int r = 1; r < kTp * kPp; ++r) {
    workers.emplace_back([&, r] {
      EngineOptions o = options_for(model, kTp, kPp);
      o.model_path = "/nonexistent/box-without-a-copy/" + model;
      o.comm = comms[r].get();
      const uint64_t before = thread_read_bytes();
      auto e = Engine::Load(o);
      read[r] = thread_read_bytes() - before;
      ASSERT_TRUE(e.ok()) << "rank " << r << ": " << e.status();
      loaded[r] = (*e)->load_stats().bytes;
      EXPECT_TRUE((*e)->run_worker().ok());
    });
  }
  EngineOptions o = options_for(model, kTp, kPp);
  o.comm = comms[0].get();
  auto e = Engine::Load(o);
  ASSERT_TRUE(e.ok()) << e.status();
  const std::vector<float> streamed = forced_logits(**e, forced);
  EXPECT_TRUE((*e)->shutdown_workers().ok());
  for (auto& t : workers) t.join();
  ASSERT_EQ(streamed.size(), reference.size());
  EXPECT_LE(max_abs_diff(streamed, reference), 1e-4f);
  for (int r = 1; r < kTp * kPp; ++r) {
    EXPECT_GT(loaded[r], 0u);
    EXPECT_LT(read[r], 64u << 10) << "rank " << r << " read from disk";
  }
}

TEST(EngineCluster, AFileOnNoBoxFailsEveryRankAtOnce) {
  auto comms = transport::make_local_world(2);
  std::promise<absl::Status> worker_status;
  const auto start = std::chrono::steady_clock::now();
  std::thread worker([&] {
    EngineOptions o = options_for("tiny-f32.gguf", 2, 1);
    o.model_path = kDir + "nowhere.gguf";
    o.comm = comms[1].get();
    worker_status.set_value(Engine::Load(o).status());
  });
  EngineOptions o = options_for("tiny-f32.gguf", 2, 1);
  o.model_path = kDir + "nowhere.gguf";
  o.comm = comms[0].get();
  auto e = Engine::Load(o);
  worker.join();
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("nowhere.gguf"), std::string::npos) << e.status();
  const absl::Status w = worker_status.get_future().get();
  EXPECT_NE(w.message().find("nothing to stream it from"), std::string::npos) << w;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

TEST(EngineCluster, ALayoutThatDoesNotMatchTheClusterIsRefused) {
  auto comms = transport::make_local_world(1);
  EngineOptions o = options_for("tiny-f32.gguf", 2, 1);
  o.comm = comms[0].get();
  auto e = Engine::Load(o);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("needs 2 ranks"), std::string::npos) << e.status();
}

}  // namespace
}  // namespace tandem::engine
