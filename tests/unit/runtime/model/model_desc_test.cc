// model_desc_from_gguf on header-only files shaped like published models and
// on a generated test model, against the reader's own sizes.
#include "runtime/model/model_desc.h"

#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "partition/plan.h"
#include "runtime/testing/header_only_model.h"
#include "runtime/testing/test_model.h"

namespace tandem::model {
namespace {

using ::testing::HasSubstr;

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "/model_desc_" + std::to_string(::getpid()) + "_" + name + ".gguf";
}

// Every tensor's bytes as the planner computes them equal the reader's.
void expect_sizes_match(const gguf::File& file, const partition::ModelDesc& m) {
  ASSERT_EQ(m.tensors.size(), file.tensors().size());
  uint64_t total = 0;
  for (size_t i = 0; i < m.tensors.size(); ++i) {
    EXPECT_EQ(m.tensors[i].name, file.tensors()[i].name);
    EXPECT_EQ(static_cast<uint64_t>(m.tensors[i].bytes()), file.tensors()[i].n_bytes)
        << m.tensors[i].name;
    total += file.tensors()[i].n_bytes;
  }
  EXPECT_EQ(static_cast<uint64_t>(m.total_bytes()), total);
}

TEST(ModelDesc, Llama405bHeaderOnly) {
  const std::string path = temp_path("405b");
  ASSERT_TRUE(testing::write_header_only_model(path, "llama-3.1-405b").ok());
  auto file = gguf::File::Open(path, {.allow_missing_data = true});
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_LT(file->file_size(), 100000u);  // a header, not 243 GB
  auto m = model_desc_from_gguf(*file);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->architecture, "llama");
  EXPECT_EQ(m->dims.n_layers, 126);
  EXPECT_EQ(m->dims.dim, 16384);
  EXPECT_EQ(m->dims.n_heads, 128);
  EXPECT_EQ(m->dims.n_kv_heads, 8);
  EXPECT_EQ(m->dims.head_dim, 128);
  EXPECT_EQ(m->dims.ffn_dim, 53248);
  EXPECT_EQ(m->dims.n_vocab, 128256);
  EXPECT_EQ(m->dims.col_align, 256);  // K-quant blocks
  EXPECT_EQ(m->context_length, 131072);
  EXPECT_FALSE(m->tied_output);
  EXPECT_EQ(m->n_experts, 0);
  EXPECT_EQ(m->kv_element_bytes, 2);  // the engine's default f16 KV cache
  EXPECT_EQ(m->kv_block_positions, 16);
  EXPECT_EQ(model_desc_from_gguf(*file, DType::kF32)->kv_element_bytes, 4);
  EXPECT_FALSE(model_desc_from_gguf(*file, DType::kQ8_0).ok());
  expect_sizes_match(*file, *m);
  // Q4_K_M: attn_v and ffn_down are Q6_K in 62 of 126 layers, plus the head.
  int q6k = 0;
  for (const partition::TensorDesc& t : m->tensors) q6k += t.type_name == "q6_k";
  EXPECT_EQ(q6k, 2 * 62 + 1);
  // About 243 GB, like llama.cpp's Q4_K_M conversion of the 405B.
  EXPECT_GT(m->total_bytes(), int64_t{242} * 1000000000);
  EXPECT_LT(m->total_bytes(), int64_t{244} * 1000000000);
  ::unlink(path.c_str());
}

TEST(ModelDesc, MixturesOfExpertsAreMarkedAndRefusedByThePlanner) {
  for (const std::string like : {"llama-4-maverick", "qwen3-235b"}) {
    const std::string path = temp_path(like);
    ASSERT_TRUE(testing::write_header_only_model(path, like).ok());
    auto file = gguf::File::Open(path, {.allow_missing_data = true});
    ASSERT_TRUE(file.ok()) << file.status();
    auto m = model_desc_from_gguf(*file);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->n_experts, 128) << like;
    expect_sizes_match(*file, *m);
    auto plan = partition::make_plan(*m, {}, {});
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kUnimplemented);
    EXPECT_THAT(std::string(plan.status().message()), HasSubstr("mixture of experts (128 experts"));
    ::unlink(path.c_str());
  }
  auto m = [] {
    const std::string path = temp_path("qwen3");
    EXPECT_TRUE(testing::write_header_only_model(path, "qwen3-235b").ok());
    auto d = model_desc_from_gguf(*gguf::File::Open(path, {.allow_missing_data = true}));
    ::unlink(path.c_str());
    return d;
  }();
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->architecture, "qwen3moe");
  EXPECT_EQ(m->n_experts_used, 8);
  EXPECT_EQ(m->dims.head_dim, 128);  // key_length, not 4096 / 64
  EXPECT_EQ(m->dims.n_kv_heads, 4);
  EXPECT_EQ(testing::write_header_only_model(temp_path("x"), "gpt-5").code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ModelDesc, GeneratedModelMatchesLlamaConfig) {
  const std::string path = temp_path("tiny");
  ASSERT_TRUE(testing::write_test_model(path, {.shape = "tiny", .type = DType::kQ8_0,
                                               .tied_embeddings = true, .rope_freqs = true})
                  .ok());
  auto file = gguf::File::Open(path);
  ASSERT_TRUE(file.ok());
  auto m = model_desc_from_gguf(*file);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->dims.n_layers, 4);
  EXPECT_EQ(m->dims.dim, 256);
  EXPECT_EQ(m->dims.head_dim, 32);
  EXPECT_EQ(m->dims.n_vocab, 512);
  EXPECT_EQ(m->dims.col_align, 32);
  EXPECT_TRUE(m->tied_output);
  EXPECT_EQ(m->name, "tandem-test-tiny-spm-q8_0");
  expect_sizes_match(*file, *m);
  // The planner splits it, the rope_freqs tensor replicated on both ranks.
  partition::ClusterDesc c;
  auto plan = partition::make_plan(*m, c, {.context = 64, .batch = 1});
  ASSERT_TRUE(plan.ok()) << plan.status();
  ::unlink(path.c_str());
}

TEST(ModelDesc, MissingKeysAreNamed) {
  gguf::Writer w;
  w.set("general.architecture", gguf::Value::str("llama"));
  w.set("llama.embedding_length", gguf::Value::u32(64));
  const std::string path = temp_path("bad");
  ASSERT_TRUE(w.write(path).ok());
  auto m = model_desc_from_gguf(*gguf::File::Open(path));
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("llama.block_count"));
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace tandem::model
