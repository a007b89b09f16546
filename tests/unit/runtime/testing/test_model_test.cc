#include "runtime/testing/test_model.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/gguf/gguf.h"
#include "runtime/kernels/cpu/convert.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tandem::testing {
namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("tandem-test-model-" + std::to_string(::getpid()) + "-" + name + ".gguf"))
      .string();
}

std::vector<char> slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

// Removes the file when the test ends, pass or fail.
struct TempFile {
  explicit TempFile(const std::string& name) : path(temp_path(name)) {}
  ~TempFile() { std::filesystem::remove(path); }
  std::string path;
};

std::vector<float> read_f32(const gguf::File& f, const gguf::TensorInfo& t) {
  std::vector<uint8_t> raw(t.n_bytes);
  EXPECT_TRUE(f.read_tensor(t, raw.data()).ok());
  std::vector<float> out(static_cast<size_t>(t.n_elements()));
  const int64_t row = t.dims[0];
  const size_t rb = row_bytes(t.type, row);
  for (int64_t r = 0; r < t.n_rows(); ++r) {
    kernels::dequantize_row(t.type, raw.data() + static_cast<size_t>(r) * rb,
                            out.data() + static_cast<size_t>(r * row), row);
  }
  return out;
}

void expect_moments(const std::vector<float>& v, double mean, double stddev,
                    const std::string& what) {
  double s = 0, s2 = 0;
  for (float x : v) s += x;
  const double m = s / static_cast<double>(v.size());
  for (float x : v) s2 += (x - m) * (x - m);
  const double sd = std::sqrt(s2 / static_cast<double>(v.size()));
  EXPECT_NEAR(m, mean, 5 * stddev / std::sqrt(static_cast<double>(v.size())) + 1e-4) << what;
  EXPECT_NEAR(sd, stddev, 0.05 * stddev) << what;
}

TEST(TestModelShape, KnownShapes) {
  auto tiny = test_model_shape("tiny");
  ASSERT_TRUE(tiny.ok());
  EXPECT_EQ(tiny->dim, 256);
  EXPECT_EQ(tiny->n_layers, 4);
  EXPECT_EQ(tiny->n_heads, 8);
  EXPECT_EQ(tiny->n_kv_heads, 4);
  EXPECT_EQ(tiny->ffn_dim, 768);
  EXPECT_EQ(tiny->n_vocab, 512);
  EXPECT_EQ(tiny->context_length, 2048);
  EXPECT_EQ(tiny->head_dim(), 32);
  auto small = test_model_shape("small");
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->dim, 512);
  EXPECT_EQ(small->n_layers, 8);
  EXPECT_EQ(small->ffn_dim, 1536);
  EXPECT_EQ(small->n_vocab, 4096);
  EXPECT_EQ(small->context_length, 4096);
  auto b1 = test_model_shape("1b");
  ASSERT_TRUE(b1.ok());
  EXPECT_EQ(b1->dim, 2048);
  EXPECT_EQ(b1->n_layers, 22);
  EXPECT_EQ(b1->n_heads, 32);
  EXPECT_EQ(b1->n_kv_heads, 4);
  EXPECT_EQ(b1->ffn_dim, 5632);
  EXPECT_EQ(b1->n_vocab, 32000);
  EXPECT_EQ(b1->head_dim(), 64);
  EXPECT_EQ(test_model_shape("huge").status().code(), absl::StatusCode::kInvalidArgument);
}

struct Case {
  const char* name;
  DType type;
  const char* vocab;
  bool tied;
  bool rope_freqs;
  uint32_t file_type;
};

class WriteTestModel : public ::testing::TestWithParam<Case> {};

TEST_P(WriteTestModel, FileHasExpectedMetadataAndTensors) {
  const Case c = GetParam();
  TempFile tmp(c.name);
  TestModelSpec spec;
  spec.type = c.type;
  spec.vocab = c.vocab;
  spec.tied_embeddings = c.tied;
  spec.rope_freqs = c.rope_freqs;
  ASSERT_TRUE(write_test_model(tmp.path, spec).ok());

  auto f = gguf::File::Open(tmp.path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(*f->get_string("general.architecture"), "llama");
  EXPECT_TRUE(f->get_string("general.name").ok());
  EXPECT_EQ(*f->get_u32("general.file_type"), c.file_type);
  EXPECT_EQ(*f->get_u32("llama.context_length"), 2048u);
  EXPECT_EQ(*f->get_u32("llama.embedding_length"), 256u);
  EXPECT_EQ(*f->get_u32("llama.block_count"), 4u);
  EXPECT_EQ(*f->get_u32("llama.feed_forward_length"), 768u);
  EXPECT_EQ(*f->get_u32("llama.attention.head_count"), 8u);
  EXPECT_EQ(*f->get_u32("llama.attention.head_count_kv"), 4u);
  EXPECT_EQ(*f->get_u32("llama.rope.dimension_count"), 32u);
  EXPECT_EQ(*f->get_f32("llama.rope.freq_base"), 10000.0f);
  EXPECT_EQ(*f->get_f32("llama.attention.layer_norm_rms_epsilon"), 1e-5f);
  EXPECT_EQ(*f->get_u32("llama.vocab_size"), 512u);
  const bool spm = std::string(c.vocab) == "spm";
  EXPECT_EQ(*f->get_string("tokenizer.ggml.model"), spm ? "llama" : "gpt2");
  EXPECT_EQ(f->get_string_array("tokenizer.ggml.tokens")->size(), 512u);
  EXPECT_EQ(f->get_i32_array("tokenizer.ggml.token_type")->size(), 512u);
  if (spm) {
    EXPECT_EQ(f->get_f32_array("tokenizer.ggml.scores")->size(), 512u);
    EXPECT_EQ(*f->get_u32("tokenizer.ggml.bos_token_id"), 1u);
    EXPECT_EQ(*f->get_u32("tokenizer.ggml.eos_token_id"), 2u);
    EXPECT_EQ(*f->get_u32("tokenizer.ggml.unknown_token_id"), 0u);
    EXPECT_TRUE(*f->get_bool("tokenizer.ggml.add_space_prefix"));
  } else {
    EXPECT_EQ(*f->get_string("tokenizer.ggml.pre"), "llama-bpe");
    EXPECT_FALSE(f->get_string_array("tokenizer.ggml.merges")->empty());
    EXPECT_EQ(*f->get_u32("tokenizer.ggml.bos_token_id"), 509u);
    EXPECT_EQ(*f->get_u32("tokenizer.ggml.eos_token_id"), 511u);
  }
  EXPECT_TRUE(*f->get_bool("tokenizer.ggml.add_bos_token"));
  auto tok = tokenizer::Tokenizer::FromGguf(*f);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::string text = "The teacher asked a good question.";
  const auto ids = (*tok)->encode(text);
  EXPECT_EQ((*tok)->decode(std::span<const int32_t>(ids).subspan(1)), text);

  struct Want {
    std::string name;
    std::vector<int64_t> dims;
    DType type;
  };
  std::vector<Want> want = {{"token_embd.weight", {256, 512}, c.type}};
  if (c.rope_freqs) want.push_back({"rope_freqs.weight", {16}, DType::kF32});
  for (int il = 0; il < 4; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    want.push_back({p + "attn_norm.weight", {256}, DType::kF32});
    want.push_back({p + "attn_q.weight", {256, 256}, c.type});
    want.push_back({p + "attn_k.weight", {256, 128}, c.type});
    want.push_back({p + "attn_v.weight", {256, 128}, c.type});
    want.push_back({p + "attn_output.weight", {256, 256}, c.type});
    want.push_back({p + "ffn_norm.weight", {256}, DType::kF32});
    want.push_back({p + "ffn_gate.weight", {256, 768}, c.type});
    want.push_back({p + "ffn_up.weight", {256, 768}, c.type});
    want.push_back({p + "ffn_down.weight", {768, 256}, c.type});
  }
  want.push_back({"output_norm.weight", {256}, DType::kF32});
  if (!c.tied) want.push_back({"output.weight", {256, 512}, c.type});
  EXPECT_EQ(f->tensors().size(), want.size());
  for (const Want& w : want) {
    const gguf::TensorInfo* t = f->find_tensor(w.name);
    ASSERT_NE(t, nullptr) << w.name;
    EXPECT_EQ(t->dims, w.dims) << w.name;
    EXPECT_EQ(t->type, w.type) << w.name;
    EXPECT_EQ(t->n_bytes, row_bytes(w.type, w.dims[0]) * static_cast<uint64_t>(t->n_rows()))
        << w.name;
  }
  EXPECT_EQ(f->find_tensor("output.weight") == nullptr, c.tied);

  // The values: weights N(0, 0.02), norms 1 + N(0, 0.1) (after quantization).
  expect_moments(read_f32(*f, *f->find_tensor("token_embd.weight")), 0.0, 0.02, "token_embd");
  expect_moments(read_f32(*f, *f->find_tensor("blk.2.ffn_down.weight")), 0.0, 0.02, "ffn_down");
  std::vector<float> norms;
  for (int il = 0; il < 4; ++il) {
    for (const char* n : {"attn_norm", "ffn_norm"}) {
      auto v = read_f32(*f, *f->find_tensor("blk." + std::to_string(il) + "." + n + ".weight"));
      norms.insert(norms.end(), v.begin(), v.end());
    }
  }
  expect_moments(norms, 1.0, 0.1, "norms");
  if (c.rope_freqs) {
    const auto r = read_f32(*f, *f->find_tensor("rope_freqs.weight"));
    EXPECT_EQ(r.front(), 1.0f);
    EXPECT_EQ(r.back(), 8.0f);
    for (size_t i = 1; i < r.size(); ++i) EXPECT_GE(r[i], r[i - 1]);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Types, WriteTestModel,
    ::testing::Values(Case{"f32_spm", DType::kF32, "spm", false, false, 0},
                      Case{"f16_bpe", DType::kF16, "bpe", false, false, 1},
                      Case{"bf16_spm_tied", DType::kBF16, "spm", true, false, 32},
                      Case{"q8_0_bpe_rope", DType::kQ8_0, "bpe", false, true, 7},
                      Case{"q4_0_spm_tied_rope", DType::kQ4_0, "spm", true, true, 2}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(WriteTestModelDeterminism, SameSeedSameBytesOtherSeedOtherBytes) {
  TempFile a("det-a"), b("det-b"), c("det-c");
  TestModelSpec spec;
  spec.type = DType::kQ8_0;
  ASSERT_TRUE(write_test_model(a.path, spec).ok());
  ASSERT_TRUE(write_test_model(b.path, spec).ok());
  spec.seed = 2;
  ASSERT_TRUE(write_test_model(c.path, spec).ok());
  const auto bytes_a = slurp(a.path), bytes_b = slurp(b.path), bytes_c = slurp(c.path);
  ASSERT_FALSE(bytes_a.empty());
  EXPECT_EQ(bytes_a, bytes_b);
  ASSERT_EQ(bytes_a.size(), bytes_c.size());  // same layout, different weights
  EXPECT_NE(bytes_a, bytes_c);
}

TEST(WriteTestModelDeterminism, PinnedValues) {
  // The same numbers as random_test's PinnedWeights, read back from the file.
  TempFile tmp("pinned");
  ASSERT_TRUE(write_test_model(tmp.path, {}).ok());
  auto f = gguf::File::Open(tmp.path);
  ASSERT_TRUE(f.ok()) << f.status();
  const auto embd = read_f32(*f, *f->find_tensor("token_embd.weight"));
  EXPECT_EQ(embd[0], 0.0020123037975281477f);
  EXPECT_EQ(embd[3], 0.00881248526275158f);
  const auto norm = read_f32(*f, *f->find_tensor("blk.0.attn_norm.weight"));
  EXPECT_EQ(norm[1], 0.9143462777137756f);
}

TEST(WriteTestModelDeterminism, QuantizedMatchesF32OfSameSeed) {
  TempFile f32("q-f32"), q8("q-q8");
  TestModelSpec spec;
  ASSERT_TRUE(write_test_model(f32.path, spec).ok());
  spec.type = DType::kQ8_0;
  ASSERT_TRUE(write_test_model(q8.path, spec).ok());
  auto a = gguf::File::Open(f32.path);
  auto b = gguf::File::Open(q8.path);
  ASSERT_TRUE(a.ok() && b.ok());
  const auto x = read_f32(*a, *a->find_tensor("blk.1.attn_q.weight"));
  const auto y = read_f32(*b, *b->find_tensor("blk.1.attn_q.weight"));
  ASSERT_EQ(x.size(), y.size());
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::fabs(double(x[i]) - y[i]));
  EXPECT_LT(worst, 3.47 * 0.02 / 127);  // one q8_0 step at the largest possible |w|
  EXPECT_GT(worst, 0.0);
}

// llama.cpp's Q4_K_M recipe: Q6_K for output.weight and for attn_v / ffn_down
// where use_more_bits(il, n_layers) holds.
TEST(WriteTestModel, KMMixFollowsLlamaCpp) {
  TestModelSpec spec;
  ASSERT_TRUE(parse_test_model_type("q4_k_m", spec).ok());
  EXPECT_EQ(spec.type, DType::kQ4_K);
  EXPECT_EQ(spec.mix, TypeMix::kKM);
  EXPECT_EQ(*file_type_of(spec.type, spec.mix), 15u);
  std::vector<int64_t> six_k;
  for (int64_t il = 0; il < 22; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    const DType v = test_model_tensor_type(spec, p + "attn_v.weight", il, 22);
    EXPECT_EQ(v, test_model_tensor_type(spec, p + "ffn_down.weight", il, 22));
    EXPECT_EQ(test_model_tensor_type(spec, p + "attn_q.weight", il, 22), DType::kQ4_K);
    EXPECT_EQ(test_model_tensor_type(spec, p + "ffn_up.weight", il, 22), DType::kQ4_K);
    if (v == DType::kQ6_K) six_k.push_back(il);
  }
  EXPECT_EQ(six_k, (std::vector<int64_t>{0, 1, 4, 7, 10, 13, 16, 19, 20, 21}));
  EXPECT_EQ(test_model_tensor_type(spec, "output.weight", -1, 22), DType::kQ6_K);
  EXPECT_EQ(test_model_tensor_type(spec, "token_embd.weight", -1, 22), DType::kQ4_K);
  spec.tied_embeddings = true;
  EXPECT_EQ(test_model_tensor_type(spec, "token_embd.weight", -1, 22), DType::kQ6_K);

  // The tiny shape (4 layers): layers 2 and 3 get Q6_K.
  spec.tied_embeddings = false;
  TempFile tmp("q4km");
  ASSERT_TRUE(write_test_model(tmp.path, spec).ok());
  auto file = gguf::File::Open(tmp.path);
  ASSERT_TRUE(file.ok()) << file.status();
  for (const gguf::TensorInfo& t : file->tensors()) {
    DType want = t.dims.size() == 1 ? DType::kF32 : DType::kQ4_K;
    if (t.name == "output.weight" || t.name == "blk.2.attn_v.weight" ||
        t.name == "blk.3.attn_v.weight" || t.name == "blk.2.ffn_down.weight" ||
        t.name == "blk.3.ffn_down.weight") {
      want = DType::kQ6_K;
    }
    EXPECT_EQ(t.type, want) << t.name;
  }
  EXPECT_FALSE(parse_test_model_type("q4_k_x", spec).ok());
  EXPECT_FALSE(parse_test_model_type("q2_k", spec).ok());
}

TEST(WriteTestModel, RefusesBadSpecs) {
  TempFile tmp("bad");
  auto code = [&](TestModelSpec s) { return write_test_model(tmp.path, s).code(); };
  TestModelSpec s;
  s.shape = "medium";
  EXPECT_EQ(code(s), absl::StatusCode::kInvalidArgument);
  s = {};
  s.vocab = "wordpiece";
  EXPECT_EQ(code(s), absl::StatusCode::kInvalidArgument);
  for (DType t : {DType::kQ2_K, DType::kQ5_1, DType::kI32, DType::kF64}) {
    s = {};
    s.type = t;
    EXPECT_EQ(code(s), absl::StatusCode::kInvalidArgument) << dtype_name(t);
  }
  EXPECT_FALSE(std::filesystem::exists(tmp.path));
  EXPECT_FALSE(write_test_model("/nonexistent-dir/x/model.gguf", {}).ok());
}

}  // namespace
}  // namespace tandem::testing
