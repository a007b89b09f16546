// tandem plan as a user runs it, on header-only files of published models.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/launcher/run_tandem.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;
using testing::count_lines;
using testing::RunResult;

class PlanCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() /
                        ("tandem-plan-cli-" + std::to_string(::getpid())));
    fs::create_directories(*dir_);
    for (const char* like : {"llama-3.1-405b", "llama-4-maverick", "qwen3-235b"}) {
      const RunResult r = testing::run_tandem("make-test-model --header-only --like " +
                                              std::string(like) + " --out " + path(like));
      ASSERT_EQ(r.code, 0) << r.err;
    }
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  static std::string path(const std::string& like) { return (*dir_ / (like + ".gguf")).string(); }
  static fs::path* dir_;
};
fs::path* PlanCliTest::dir_ = nullptr;

// Llama 3.1 405B (126 layers, dim 16384, 128 heads, 8 KV heads of 128, FFN
// 53248, vocabulary 128256) in llama.cpp's Q4_K_M mixture on two DGX Sparks,
// one rank each, context 8192 x 1 sequence: tp2 x pp1 wins, and each node
// holds this, worked out by hand.
//
// Q4_K stores 256 elements in 144 bytes, Q6_K in 210. With tp 2 each rank
// holds half the rows of q, k, v, gate, up and of the vocabulary, and half the
// columns of o and down (whole 256-element blocks: 8192 = 32 blocks, 26624 =
// 104 blocks); a row of 16384 elements is 64 blocks.
constexpr int64_t kQ4 = 144, kQ6 = 210;
constexpr int64_t q = 8192 * 64 * kQ4;            // 64 heads x 128 rows       = 75,497,472
constexpr int64_t k = 512 * 64 * kQ4;             // 4 KV heads x 128 rows     =  4,718,592
constexpr int64_t v_q4 = 512 * 64 * kQ4;          //                           =  4,718,592
constexpr int64_t v_q6 = 512 * 64 * kQ6;          //                           =  6,881,280
constexpr int64_t o = 16384 * 32 * kQ4;           // 16384 rows x 8192 columns = 75,497,472
constexpr int64_t gate = 26624 * 64 * kQ4;        // 26624 FFN rows            = 245,366,784
constexpr int64_t up = gate;                      //                           = 245,366,784
constexpr int64_t down_q4 = 16384 * 104 * kQ4;    // 16384 rows x 26624 cols   = 245,366,784
constexpr int64_t down_q6 = 16384 * 104 * kQ6;    //                           = 357,826,560
constexpr int64_t norms = 2 * 16384 * 4;          // attn_norm + ffn_norm, f32 =    131,072
constexpr int64_t layer_q4 = norms + q + k + v_q4 + o + gate + up + down_q4;  // 896,663,552
constexpr int64_t layer_q6 = norms + q + k + v_q6 + o + gate + up + down_q6;  // 1,011,286,016
// Q4_K_M gives attn_v and ffn_down Q6_K in layers i < 126/8 = 15,
// i >= 7*126/8 = 110, and (i - 15) % 3 == 2 between: 15 + 16 + 31 = 62 layers.
constexpr int64_t layers = 64 * layer_q4 + 62 * layer_q6;  // = 120,086,200,320
constexpr int64_t embedding = 64128 * 64 * kQ4;           // half the vocabulary, Q4_K = 591,003,648
constexpr int64_t head = 64128 * 64 * kQ6;                // half the vocabulary, Q6_K = 861,880,320
constexpr int64_t output_norm = 16384 * 4;                //                             = 65,536
constexpr int64_t rope_freqs = 64 * 4;                    // on every rank               = 256
constexpr int64_t weights = layers + embedding + head + output_norm + rope_freqs;
static_assert(weights == 121'539'150'080);  // 113.2 GiB
// KV cache: 126 layers x 4 KV heads x 128 x (key + value) x 2 bytes (f16,
// the default --kv-type) x 8192 positions x 1 sequence; twice that in f32.
constexpr int64_t kv_cache = int64_t{126} * 4 * 128 * 2 * 2 * 8192 * 1;
static_assert(kv_cache == 2'113'929'216);  // 2.0 GiB
constexpr int64_t kv_cache_f32 = int64_t{126} * 4 * 128 * 2 * 4 * 8192 * 1;
static_assert(kv_cache_f32 == 4'227'858'432);  // 3.9 GiB
// Workspace for 512-token passes, f32: x and xb (2 x 16384), q and the
// attention output (2 x 8192), k and v (2 x 512), gate and up (2 x 26624), the
// RoPE table (128) and a matmul scratch of the widest input (26624); plus the
// gathered logits of 512 tokens x 128256.
constexpr int64_t workspace =
    4 * 512 * (2 * 16384 + 2 * 8192 + 2 * 512 + 2 * 26624 + 128 + 26624) + 4 * 512 * 128256;
static_assert(workspace == 529'268'736);
constexpr int64_t os_reserve = int64_t{8} << 30;
constexpr int64_t node_total = weights + kv_cache + workspace + os_reserve;
static_assert(node_total == 132'772'282'624);  // 123.7 GiB of 128 GiB
constexpr int64_t node_total_f32 = weights + kv_cache_f32 + workspace + os_reserve;
static_assert(node_total_f32 == 134'886'211'840);  // 125.6 GiB of 128 GiB

TEST_F(PlanCliTest, Llama405bOnTwoSparksMatchesTheHandComputation) {
  const RunResult r = testing::run_tandem("plan --model " + path("llama-3.1-405b") +
                                          " --context 8192 --batch 1 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["chosen"], "tp2 x pp1");
  EXPECT_NE(j["reason"].get<std::string>().find("fastest predicted decode"), std::string::npos);
  const nlohmann::json* chosen = nullptr;
  for (const nlohmann::json& l : j["layouts"]) {
    if (l["name"] == j["chosen"]) chosen = &l;
  }
  ASSERT_NE(chosen, nullptr);
  ASSERT_EQ((*chosen)["nodes"].size(), 2u);
  for (const nlohmann::json& n : (*chosen)["nodes"]) {
    EXPECT_EQ(n["weights"].get<int64_t>(), weights);
    EXPECT_EQ(n["kv_cache"].get<int64_t>(), kv_cache);
    EXPECT_EQ(n["workspace"].get<int64_t>(), workspace);
    EXPECT_EQ(n["os_reserve"].get<int64_t>(), os_reserve);
    EXPECT_EQ(n["total"].get<int64_t>(), node_total);
    EXPECT_EQ(n["available"].get<int64_t>(), int64_t{128} << 30);
    EXPECT_TRUE(n["fits"].get<bool>());
  }
  // Decode reads every weight but the embedding once: (weights - embedding)
  // / 273 GB/s plus the KV cache, and the all_reduces over the link.
  const double decode = (*chosen)["decode"]["step_s"].get<double>();
  const double reads = static_cast<double>(weights - embedding + kv_cache) / 273e9;
  EXPECT_GT(decode, reads);
  EXPECT_LT(decode, reads + 0.02);
  // 2 all_reduces per layer + the embedding's, each 30 us + 64 KiB / 25 GB/s,
  // plus the logits gather (64128 x 4 bytes over the link).
  const double sync = (*chosen)["decode"]["sync_s"].get<double>();
  EXPECT_NEAR(sync, 253 * (30e-6 + 65536 / 25e9) + (30e-6 + 64128 * 4 / 25e9), 1e-9);
  EXPECT_EQ(j["layouts"].size(), 2u);
  EXPECT_EQ(j["layouts"][0]["name"], "tp1 x pp2");
  EXPECT_TRUE(j["layouts"][0]["fits"].get<bool>());
}

TEST_F(PlanCliTest, AnF32KvCacheTakesTwiceTheBytes) {
  const RunResult r = testing::run_tandem("plan --model " + path("llama-3.1-405b") +
                                          " --context 8192 --batch 1 --kv-type f32 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["chosen"], "tp2 x pp1");
  for (const nlohmann::json& l : j["layouts"]) {
    if (l["name"] != j["chosen"]) continue;
    for (const nlohmann::json& n : l["nodes"]) {
      EXPECT_EQ(n["kv_cache"].get<int64_t>(), kv_cache_f32);
      EXPECT_EQ(n["total"].get<int64_t>(), node_total_f32);
    }
  }
  const RunResult bad = testing::run_tandem("plan --model " + path("llama-3.1-405b") +
                                            " --kv-type q8_0");
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("--kv-type"), std::string::npos) << bad.err;
}

TEST_F(PlanCliTest, TextNamesTheChoiceAndTheAlternatives) {
  const RunResult r = testing::run_tandem("plan --model " + path("llama-3.1-405b") +
                                          " --context 8192 --batch 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("chosen: tp2 x pp1 (the fastest predicted decode"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("= 123.7 GiB of 128.0 GiB (" + std::to_string(node_total) + " bytes)"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("layouts considered:"), std::string::npos);
  EXPECT_NE(r.out.find("tp1 x pp2"), std::string::npos);
  EXPECT_NE(r.out.find("<- chosen"), std::string::npos);
}

TEST_F(PlanCliTest, ALoadThatDoesNotFitIsRefusedWithTheNumbers) {
  // The defaults (context 32768 x 8 sequences) need 63 GiB of f16 KV cache per node.
  RunResult r = testing::run_tandem("plan --model " + path("llama-3.1-405b"));
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("no layout of 2 nodes x 1 ranks per node = 2 ranks fits"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("tp2 x pp1: node 0 needs"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("KV cache 63.0 GiB"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("but has 137438953472 (128.0 GiB)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("positions of KV cache (context x sequences) would fit"),
            std::string::npos)
      << r.err;
  EXPECT_TRUE(r.out.empty());

  // A forced layout that does not fit names its node.
  r = testing::run_tandem("plan --model " + path("llama-3.1-405b") +
                          " --tp 2 --pp 1 --context 8192 --batch 4");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("tp2 x pp1 for 'Llama 3.1 405B (header only)': node 0 needs"),
            std::string::npos)
      << r.err;

  // One Spark cannot hold it at all.
  r = testing::run_tandem("plan --model " + path("llama-3.1-405b") + " --nodes 1 --context 1024 --batch 1");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("not even the weights fit"), std::string::npos) << r.err;
}

TEST_F(PlanCliTest, MixturesOfExpertsAreRefusedClearly) {
  for (const char* like : {"llama-4-maverick", "qwen3-235b"}) {
    const RunResult r = testing::run_tandem("plan --model " + path(like));
    EXPECT_EQ(r.code, 2) << like;
    EXPECT_EQ(count_lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find("is a mixture of experts (128 experts"), std::string::npos) << r.err;
  }
}

TEST_F(PlanCliTest, BadInputExits2WithOneLine) {
  const std::string m = " --model " + path("llama-3.1-405b");
  for (const std::string& args : std::vector<std::string>{
           "plan", "plan --model /nonexistent/x.gguf", "plan" + m + " --node-memory 128",
        "plan" + m + " --link 200Gbit", "plan" + m + " --link-latency fast",
        "plan" + m + " --mem-bw 0GB/s", "plan" + m + " --rank-mem-bw fast", "plan" + m + " --nodes 0", "plan" + m + " --batch 0",
        "plan" + m + " --tp 3", "plan" + m + " --tp 2 --pp 2",
        "make-test-model --header-only --like gpt-5 --out /tmp/x.gguf",
        "make-test-model --header-only --out /tmp/x.gguf",
        "make-test-model --like llama-3.1-405b --out /tmp/x.gguf"}) {
    const RunResult r = testing::run_tandem(args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.err;
    EXPECT_EQ(count_lines(r.err), 1) << args << ": " << r.err;
  }
}

// A rank that reads slower than its box (a CPU rank with few threads) makes
// every layout's decode slower, by its share of the weights over that rate.
TEST_F(PlanCliTest, ARankMemoryBandwidthSlowsDecode) {
  const std::string base =
      "plan --model " + path("llama-3.1-405b") + " --context 8192 --batch 1 --tp 2 --json";
  const RunResult box = testing::run_tandem(base);
  const RunResult rank = testing::run_tandem(base + " --rank-mem-bw 100GB/s");
  ASSERT_EQ(box.code, 0) << box.err;
  ASSERT_EQ(rank.code, 0) << rank.err;
  const auto step = [](const RunResult& r) {
    const nlohmann::json j = nlohmann::json::parse(r.out);
    return j["layouts"][0]["decode"]["step_s"].get<double>();
  };
  // Each rank reads its half of the weights (`weights` is one node's) at
  // 100 GB/s instead of 273.
  const double reads = static_cast<double>(weights - embedding);
  EXPECT_GT(step(rank), step(box) + 0.9 * (reads / 100e9 - reads / 273e9));
}

TEST_F(PlanCliTest, RanksInsideANodeKeepTpThere) {
  // Two boxes with two ranks each: tp2 x pp2 keeps each TP group in a box.
  const RunResult r = testing::run_tandem("plan --model " + path("llama-3.1-405b") +
                                          " --ranks-per-node 2 --context 4096 --batch 1 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["layouts"].size(), 3u);
  for (const nlohmann::json& l : j["layouts"]) {
    EXPECT_EQ(l["tp_within_nodes"].get<bool>(), l["tp"].get<int>() <= 2) << l["name"];
  }
}

}  // namespace
}  // namespace tandem
