// The tandem binary as a user runs it: real processes, real files.
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/launcher/run_tandem.h"
#include "runtime/gguf/gguf.h"
#include "runtime/testing/test_model.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

using Result = testing::RunResult;
using testing::count_lines;

Result tandem(const std::string& args, const std::string& env = "") {
  return testing::run_tandem(args, env);
}

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new std::string((fs::temp_directory_path() / "tandem-cli-tiny.gguf").string());
    ASSERT_TRUE(testing::write_test_model(*model_, {}).ok());
  }
  static void TearDownTestSuite() {
    fs::remove(*model_);
    delete model_;
  }
  static std::string* model_;
};
std::string* CliTest::model_ = nullptr;

TEST_F(CliTest, BadFlagsGiveOneLineAndExitCode2) {
  for (const std::string args : {"", "frobnicate", "generate --model x", "generate --bogus 1",
                                 "generate --model x --prompt y --threads 0",
                                 "make-test-model --out /tmp/x.gguf --shape huge"}) {
    const Result r = tandem(args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.err;
    EXPECT_EQ(count_lines(r.err), 1) << args << ": " << r.err;
  }
}

TEST_F(CliTest, BadLinkCheckFlagsAreNamed) {
  const Result unit = tandem("generate --model x --prompt y --min-link-bandwidth 10");
  EXPECT_EQ(unit.code, 2) << unit.err;
  EXPECT_NE(unit.err.find("--min-link-bandwidth"), std::string::npos) << unit.err;
  const Result both = tandem("generate --model x --prompt y --skip-link-check --require-link rdma");
  EXPECT_EQ(both.code, 2) << both.err;
  EXPECT_NE(both.err.find("--skip-link-check does not go with"), std::string::npos) << both.err;
  const Result kind = tandem("generate --model x --prompt y --require-link infiniband");
  EXPECT_EQ(kind.code, 2) << kind.err;
  EXPECT_EQ(count_lines(kind.err), 1) << kind.err;
}

TEST_F(CliTest, MissingFileIsNamed) {
  const Result r = tandem("generate --model /nonexistent/m.gguf --prompt hi");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(count_lines(r.err), 1);
  EXPECT_NE(r.err.find("/nonexistent/m.gguf"), std::string::npos) << r.err;
}

TEST_F(CliTest, UnsupportedArchitectureIsRefused) {
  gguf::Writer w;
  w.set("general.architecture", gguf::Value::str("mamba"));
  const std::string path = (fs::temp_directory_path() / "tandem-cli-mamba.gguf").string();
  ASSERT_TRUE(w.write(path).ok());
  const Result r = tandem("generate --model " + path + " --prompt hi");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(count_lines(r.err), 1);
  EXPECT_NE(r.err.find("unsupported architecture 'mamba'"), std::string::npos) << r.err;
  fs::remove(path);
}

TEST_F(CliTest, UnsupportedTensorTypeIsNamed) {
  // The tiny model again, with one matrix retyped as Q2_K (same element count).
  auto src = gguf::File::Open(*model_);
  ASSERT_TRUE(src.ok());
  gguf::Writer w;
  for (const gguf::KeyValue& kv : src->metadata()) w.set(kv.key, kv.value);
  for (const gguf::TensorInfo& t : src->tensors()) {
    if (t.name == "blk.0.attn_q.weight") {
      std::vector<uint8_t> zeros(row_bytes(DType::kQ2_K, t.dims[0]) * t.dims[1], 0);
      w.add_tensor(t.name, t.dims, DType::kQ2_K, zeros);
    } else {
      std::vector<uint8_t> bytes(t.n_bytes);
      ASSERT_TRUE(src->read_tensor(t, bytes.data()).ok());
      w.add_tensor(t.name, t.dims, t.type, bytes);
    }
  }
  const std::string path = (fs::temp_directory_path() / "tandem-cli-q2k.gguf").string();
  ASSERT_TRUE(w.write(path).ok());
  const Result r = tandem("generate --model " + path + " --prompt hi");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(count_lines(r.err), 1);
  EXPECT_NE(r.err.find("q2_k"), std::string::npos) << r.err;
  fs::remove(path);
}

TEST_F(CliTest, GenerateStreamsTextIdsAndSpeeds) {
  const std::string logits = (fs::temp_directory_path() / "tandem-cli-logits.f32").string();
  const Result r = tandem("generate --model " + *model_ +
                          " --prompt 'Hello world' --max-tokens 6 --temperature 0 --ignore-eos"
                          " --threads 2 --print-token-ids --logits-out " + logits);
  ASSERT_EQ(r.code, 0) << r.err;
  const std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_FALSE(lines.empty());
  const std::vector<std::string> ids = absl::StrSplit(lines.back(), ' ');
  EXPECT_EQ(ids.size(), 6u) << r.out;
  EXPECT_NE(r.err.find("load:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("prompt:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("decode:"), std::string::npos) << r.err;

  const Result tok = tandem("tokenize --model " + *model_ + " --text 'Hello world'");
  ASSERT_EQ(tok.code, 0) << tok.err;
  const size_t n_prompt = std::vector<std::string>(absl::StrSplit(tok.out.substr(0, tok.out.size() - 1), ' ')).size();
  EXPECT_EQ(fs::file_size(logits), (n_prompt + 6 - 1) * 512 * sizeof(float));
  fs::remove(logits);

  // The same seed and greedy decoding give the same ids again.
  const Result again = tandem("generate --model " + *model_ +
                              " --prompt 'Hello world' --max-tokens 6 --temperature 0 --ignore-eos"
                              " --threads 1 --print-token-ids");
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(r.out, again.out);
}

// make-test-model --type q4_k_m writes llama.cpp's Q4_K_M mix (Q4_K with
// Q6_K for output and some attn_v / ffn_down), and that model generates.
TEST_F(CliTest, MakeTestModelQ4_K_MGenerates) {
  const std::string path = (fs::temp_directory_path() / "tandem-cli-q4km.gguf").string();
  const Result made = tandem("make-test-model --out " + path + " --shape tiny --type q4_k_m");
  ASSERT_EQ(made.code, 0) << made.err;
  const Result info = tandem("model-info " + path);
  ASSERT_EQ(info.code, 0) << info.err;
  EXPECT_NE(info.out.find("q4_k"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("q6_k"), std::string::npos) << info.out;
  const Result r = tandem("generate --model " + path +
                          " --prompt 'Hello world' --max-tokens 4 --temperature 0 --ignore-eos"
                          " --threads 2 --print-token-ids");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("decode:"), std::string::npos) << r.err;
  const Result bad = tandem("make-test-model --out " + path + " --type q3_k_m");
  EXPECT_EQ(bad.code, 2);
  EXPECT_EQ(count_lines(bad.err), 1) << bad.err;
  fs::remove(path);
}

TEST_F(CliTest, TokenizeMatchesLlamaCpp) {
  const Result r = tandem(std::string("tokenize --model ") + TANDEM_TEST_DATA_DIR +
                          "/tokenizer/vocab-llama2.gguf --text 'Hello world' --no-bos");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "15043 3186\n");
}

TEST_F(CliTest, ModelInfoDescribesTheModel) {
  const Result r = tandem("model-info " + *model_);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("architecture: llama"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("llama.block_count = 4"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tensors: "), std::string::npos) << r.out;
}

// bench decode and prefill as a user runs them, in JSON: every row has its
// speed, the read bandwidth probed next to its runs, and for decode the bound
// and the fraction of it (each run paired with its own probes).
TEST_F(CliTest, BenchReportsSpeedAndTheBoundMeasuredNextToIt) {
  const Result decode = tandem("bench decode --model " + *model_ +
                               " --threads 1,2 --gen-tokens 4 --repetitions 2 --json");
  ASSERT_EQ(decode.code, 0) << decode.err;
  const auto rows = nlohmann::json::parse(decode.out);
  ASSERT_EQ(rows.size(), 2u) << decode.out;
  for (const auto& row : rows) {
    EXPECT_EQ(row["test"], "tg4");
    EXPECT_GT(row["tokens_per_s"].get<double>(), 0);
    EXPECT_GT(row["read_gb_per_s"].get<double>(), 0);
    const double bound = row["bound_tokens_per_s"].get<double>();
    const double fraction = row["fraction_of_bound"].get<double>();
    EXPECT_GT(bound, 0);
    // Each run's fraction uses its own probes, so the mean of the fractions
    // is near, not equal to, mean speed / mean bound.
    EXPECT_GT(fraction, 0);
    EXPECT_LT(std::abs(fraction / (row["tokens_per_s"].get<double>() / bound) - 1), 0.5);
  }
  EXPECT_EQ(rows[1]["threads"], 2);

  // The bound counts the KV cache that each step reads: the mean position
  // of the 4 steps is context + 2.5.
  const Result deep = tandem("bench decode --model " + *model_ +
                             " --threads 1 --gen-tokens 4 --repetitions 1 --decode-context 16"
                             " --json");
  ASSERT_EQ(deep.code, 0) << deep.err;
  const auto deep_rows = nlohmann::json::parse(deep.out);
  ASSERT_EQ(deep_rows.size(), 1u) << deep.out;
  EXPECT_EQ(deep_rows[0]["test"], "tg4 @ d16");
  const double kv_shallow = rows[0]["kv_bytes_per_token"].get<double>();
  const double kv_deep = deep_rows[0]["kv_bytes_per_token"].get<double>();
  EXPECT_GT(kv_shallow, 0);
  EXPECT_NEAR(kv_deep / kv_shallow, 18.5 / 2.5, 1e-3);

  const Result prefill = tandem("bench prefill --model " + *model_ +
                                " --threads 1 --prompt-tokens 8,16 --repetitions 1 --json");
  ASSERT_EQ(prefill.code, 0) << prefill.err;
  const auto pp = nlohmann::json::parse(prefill.out);
  ASSERT_EQ(pp.size(), 2u) << prefill.out;
  EXPECT_EQ(pp[0]["test"], "pp8");
  EXPECT_EQ(pp[1]["test"], "pp16");
  EXPECT_FALSE(pp[0].contains("fraction_of_bound"));
  EXPECT_GT(pp[1]["tokens_per_s"].get<double>(), 0);
}

}  // namespace
}  // namespace tandem
