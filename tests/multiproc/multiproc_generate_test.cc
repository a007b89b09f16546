// `tandem generate` over real processes gives the single-rank answer: the
// same text, the same greedy ids over 32 tokens, and logits within 1e-4 on
// the F32 fixture, for TP=2, PP=2, TP=2 x PP=2 and TP=4 over UCX (TCP and
// shared memory) and for TP=2 and PP=2 under mpirun. Also: a lost rank is a
// clear error, not a hang.
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/multiproc/process_group.h"
#include "tests/unit/launcher/run_tandem.h"

namespace tandem::testing {
namespace {

const std::string kModel = std::string(TANDEM_TEST_DATA_DIR) + "/llama-tiny/tiny-f32.gguf";
const std::string kQ8Model = std::string(TANDEM_TEST_DATA_DIR) + "/llama-tiny/tiny-q8_0.gguf";
const std::string kMpiEnv =
    "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1";
const std::string kMpirun = std::string(TANDEM_MPIEXEC) +
                            " --oversubscribe --timeout 50 --mca btl self,vader,tcp"
                            " --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo";

struct Output {
  RunResult run;
  std::vector<float> logits;
};

std::vector<float> read_floats(const std::filesystem::path& p) {
  const std::string bytes = slurp(p);
  std::vector<float> v(bytes.size() / sizeof(float));
  if (!v.empty()) std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

// `launcher` prefixes the command (mpirun); `flags` choose the layout.
Output generate(const std::string& flags, const std::string& model = kModel,
                const std::string& launcher = "", const std::string& env = "") {
  static int n = 0;
  const auto logits = std::filesystem::temp_directory_path() /
                      ("tandem-gen-logits-" + std::to_string(getpid()) + "-" + std::to_string(n++));
  const std::string args = "generate --model " + model +
                           " --prompt 'Hello my name is' --max-tokens 32 --temperature 0"
                           " --ignore-eos --print-token-ids --threads 1 --logits-out " +
                           logits.string() + " " + flags;
  Output o;
  if (launcher.empty()) {
    o.run = run_tandem(args, env);
  } else {
    o.run = run_tandem_under(launcher, args, env);
  }
  o.logits = read_floats(logits);
  std::filesystem::remove(logits);
  return o;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0.0f;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

const Output& single_rank() {
  static const Output o = generate("");
  return o;
}

void expect_single_rank_answer(const Output& got) {
  const Output& want = single_rank();
  ASSERT_EQ(want.run.code, 0) << want.run.err;
  ASSERT_EQ(got.run.code, 0) << got.run.err;
  EXPECT_EQ(got.run.out, want.run.out);  // text and the 32 greedy ids
  ASSERT_EQ(got.logits.size(), want.logits.size());
  ASSERT_EQ(want.logits.size(), (13u + 31u) * 512u);
  EXPECT_LE(max_abs_diff(got.logits, want.logits), 1e-4f);
}

TEST(MultiprocGenerate, TensorParallelOverUcxTcp) {
  const Output got = generate("--tp 2 --local-ranks 2");
  EXPECT_NE(got.run.err.find("2 ranks over ucx, started on this box; layout tp 2 x pp 1"),
            std::string::npos)
      << got.run.err;
  // The start-up link check says what it measured.
  EXPECT_NE(got.run.err.find("link rank 0 <-> 1: ucx tcp/"), std::string::npos) << got.run.err;
  expect_single_rank_answer(got);
}

TEST(MultiprocGenerate, TensorParallelOverUcxSharedMemory) {
  expect_single_rank_answer(generate("--tp 2 --local-ranks 2 --shared-memory"));
}

TEST(MultiprocGenerate, PipelineOverUcx) { expect_single_rank_answer(generate("--pp 2")); }

TEST(MultiprocGenerate, TensorTimesPipelineOverUcx) {
  expect_single_rank_answer(generate("--tp 2 --pp 2"));
}

TEST(MultiprocGenerate, FourWayTensorParallel) { expect_single_rank_answer(generate("--tp 4")); }

TEST(MultiprocGenerate, TensorParallelUnderMpirun) {
  const Output got = generate("--tp 2", kModel, kMpirun + " -np 2", kMpiEnv);
  EXPECT_NE(got.run.err.find("over mpi"), std::string::npos) << got.run.err;
  expect_single_rank_answer(got);
}

TEST(MultiprocGenerate, PipelineUnderMpirun) {
  expect_single_rank_answer(generate("--pp 2", kModel, kMpirun + " -np 2", kMpiEnv));
}

// MPI does not say which transport it picked, so RDMA cannot be checked:
// refused with the way out, on every rank, and nothing hangs.
TEST(MultiprocGenerate, RequiringRdmaUnderMpirunSaysHowToCheckIt) {
  const Output got = generate("--tp 2 --require-link rdma", kModel, kMpirun + " -np 2", kMpiEnv);
  EXPECT_NE(got.run.code, 0);
  EXPECT_NE(got.run.err.find("runs over MPI, which does not say which transport"),
            std::string::npos)
      << got.run.err;
}

// Q8_0: the prompt's logits (before any sampled token could differ) within
// one 8-bit quantization step of the single-rank run.
TEST(MultiprocGenerate, QuantizedTensorParallel) {
  const Output want = generate("", kQ8Model);
  const Output got = generate("--tp 2", kQ8Model);
  ASSERT_EQ(got.run.code, 0) << got.run.err;
  ASSERT_GE(got.logits.size(), 13u * 512u);
  ASSERT_GE(want.logits.size(), 13u * 512u);
  const std::vector<float> a(got.logits.begin(), got.logits.begin() + 13 * 512);
  const std::vector<float> b(want.logits.begin(), want.logits.begin() + 13 * 512);
  EXPECT_LE(max_abs_diff(a, b), 3e-2f);
}

// Two ranks started by hand (--rank/--world-size/--master), the second on a
// "box" without the model file: it streams its shard from rank 0 over UCX,
// and the answer is the single rank's.
TEST(MultiprocGenerate, ARankWithoutTheFileStreamsItsShard) {
  const std::string master = "127.0.0.1:" + std::to_string(free_port());
  const auto worker_err = std::filesystem::temp_directory_path() /
                          ("tandem-stream-worker-" + std::to_string(getpid()));
  const std::string worker = "\"$0\" generate --model /nonexistent/no-copy-here.gguf"
                             " --prompt x --threads 1 --tp 2 --rank 1 --world-size 2 --master " +
                             master + " 2>" + worker_err.string();
  const Output got = generate("--tp 2 --rank 0 --world-size 2 --master " + master, kModel,
                              "sh -c '" + worker + " & exec \"$0\" \"$@\"'",
                              "TANDEM_CLUSTER_TOKEN=stream-test");
  expect_single_rank_answer(got);
  EXPECT_NE(got.run.err.find("streamed"), std::string::npos) << got.run.err;
  const std::string err = slurp(worker_err);
  std::filesystem::remove(worker_err);
  EXPECT_NE(err.find("is not on this box: streaming its shard from rank 0"), std::string::npos)
      << err;
}

// No --tp/--pp: rank 0's planner picks the layout, says why, and every rank
// loads it. (This tiny model is cheap to read, so over TCP's latency the
// planner may prefer fewer exchanges: either layout is right.) Three ranks
// cannot split its 4 KV heads, so the planner takes three pipeline stages
// instead of failing.
TEST(MultiprocGenerate, WithoutALayoutThePlannerChoosesOne) {
  const Output two = generate("--local-ranks 2");
  expect_single_rank_answer(two);
  EXPECT_NE(two.run.err.find("x pp"), std::string::npos) << two.run.err;
  EXPECT_NE(two.run.err.find(", chosen by the planner for 1 node(s) x 2 rank(s)"),
            std::string::npos)
      << two.run.err;
  const Output three = generate("--local-ranks 3");
  expect_single_rank_answer(three);
  EXPECT_NE(three.run.err.find("layout: tp1 x pp3, chosen by the planner"), std::string::npos)
      << three.run.err;
}

TEST(MultiprocGenerate, ALayoutTheClusterCannotHoldIsRefused) {
  const Output got = generate("--tp 2 --local-ranks 3");
  EXPECT_EQ(got.run.code, 2) << got.run.err;
  EXPECT_NE(got.run.err.find("needs 2 ranks; the cluster has 3"), std::string::npos) << got.run.err;
  const Output bad = generate("--tp 3");
  EXPECT_EQ(bad.run.code, 2) << bad.run.err;
  EXPECT_NE(bad.run.err.find("tp 3 cannot split 8 heads with 4 KV heads"), std::string::npos)
      << bad.run.err;
}

// --min-link-bandwidth and --require-link refuse to start on a link that
// measures less, naming the figure, promptly, on every rank.
TEST(MultiprocGenerate, LinkCheckRefusesASlowLink) {
  const auto start = std::chrono::steady_clock::now();
  const Output slow = generate("--tp 2 --local-ranks 2 --min-link-bandwidth 1000GB/s");
  EXPECT_NE(slow.run.code, 0) << slow.run.err;
  EXPECT_NE(slow.run.err.find("--min-link-bandwidth 1000GB/s: link rank 0 <-> 1 measured "),
            std::string::npos)
      << slow.run.err;
  EXPECT_NE(slow.run.err.find("GB/s, below the 1000.00 GB/s asked for"), std::string::npos)
      << slow.run.err;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(15));
  const Output tcp = generate("--tp 2 --local-ranks 2 --require-link rdma");
  EXPECT_NE(tcp.run.code, 0) << tcp.run.err;
  EXPECT_NE(tcp.run.err.find("--require-link rdma: link rank 0 <-> 1 runs over tcp"),
            std::string::npos)
      << tcp.run.err;
  const Output skipped = generate("--tp 2 --local-ranks 2 --skip-link-check");
  EXPECT_EQ(skipped.run.code, 0) << skipped.run.err;
  EXPECT_EQ(skipped.run.err.find("link rank 0"), std::string::npos) << skipped.run.err;
}

}  // namespace
}  // namespace tandem::testing
