// The reader on real llama.cpp files (tiny Llama models and real vocabularies)
// and on file-system errors.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/gguf/gguf.h"

namespace tandem::gguf {
namespace {

using ::testing::HasSubstr;

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

#define SKIP_IF_MISSING(path) \
  if (!exists(path)) GTEST_SKIP() << "fixture " << (path) << " is missing"

const std::string kData = TANDEM_TEST_DATA_DIR;

TEST(GgufReader, TinyF32Model) {
  const std::string path = kData + "/llama-tiny/tiny-f32.gguf";
  SKIP_IF_MISSING(path);
  auto f = File::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(*f->get_string("general.architecture"), "llama");
  EXPECT_EQ(*f->get_u32("llama.embedding_length"), 256u);
  EXPECT_EQ(*f->get_u32("llama.block_count"), 4u);
  EXPECT_EQ(*f->get_u32("llama.attention.head_count"), 8u);
  EXPECT_EQ(*f->get_u32("llama.attention.head_count_kv"), 4u);
  EXPECT_EQ(*f->get_u32("llama.feed_forward_length"), 768u);
  EXPECT_NEAR(*f->get_f32("llama.attention.layer_norm_rms_epsilon"), 1e-5f, 1e-9f);
  EXPECT_EQ(f->get_string_array("tokenizer.ggml.tokens")->size(), 512u);

  // 4 layers x 9 tensors + token_embd, output_norm, output.
  EXPECT_EQ(f->tensors().size(), 4u * 9u + 3u);
  const TensorInfo* embd = f->find_tensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->dims, (std::vector<int64_t>{256, 512}));
  EXPECT_EQ(embd->type, DType::kF32);
  const TensorInfo* wq = f->find_tensor("blk.0.attn_q.weight");
  ASSERT_NE(wq, nullptr);
  EXPECT_EQ(wq->dims, (std::vector<int64_t>{256, 256}));
  const TensorInfo* wk = f->find_tensor("blk.3.attn_k.weight");
  ASSERT_NE(wk, nullptr);
  EXPECT_EQ(wk->dims, (std::vector<int64_t>{256, 128}));

  // All norm weights are 1.0; random weights are small.
  const TensorInfo* norm = f->find_tensor("blk.2.attn_norm.weight");
  ASSERT_NE(norm, nullptr);
  std::vector<float> ones(static_cast<size_t>(norm->n_elements()));
  ASSERT_TRUE(f->read_tensor(*norm, ones.data()).ok());
  for (float x : ones) ASSERT_EQ(x, 1.0f);
  std::vector<float> w(static_cast<size_t>(wq->n_elements()));
  ASSERT_TRUE(f->read_tensor(*wq, w.data()).ok());
  double sum_sq = 0;
  for (float x : w) sum_sq += double{x} * x;
  EXPECT_NEAR(std::sqrt(sum_sq / static_cast<double>(w.size())), 0.02, 0.002);

  // The last tensor ends inside the file.
  uint64_t end = 0;
  for (const TensorInfo& t : f->tensors()) end = std::max(end, t.file_offset + t.n_bytes);
  EXPECT_LE(end, f->file_size());
}

TEST(GgufReader, TinyQ8Model) {
  const std::string path = kData + "/llama-tiny/tiny-q8_0.gguf";
  SKIP_IF_MISSING(path);
  auto f = File::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  const TensorInfo* wq = f->find_tensor("blk.0.attn_q.weight");
  ASSERT_NE(wq, nullptr);
  EXPECT_EQ(wq->type, DType::kQ8_0);
  EXPECT_EQ(wq->n_bytes, row_bytes(DType::kQ8_0, 256) * 256);
  std::vector<BlockQ8_0> blocks(wq->n_bytes / sizeof(BlockQ8_0));
  ASSERT_TRUE(f->read_tensor(*wq, blocks.data()).ok());
}

TEST(GgufReader, Llama2Vocab) {
  const std::string path = kData + "/tokenizer/vocab-llama2.gguf";
  SKIP_IF_MISSING(path);
  auto f = File::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(*f->get_string("tokenizer.ggml.model"), "llama");
  auto tokens = f->get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok());
  ASSERT_EQ(tokens->size(), 32000u);
  EXPECT_EQ((*tokens)[0], "<unk>");
  EXPECT_EQ((*tokens)[1], "<s>");
  EXPECT_EQ((*tokens)[3], "<0x00>");
  EXPECT_EQ(f->get_f32_array("tokenizer.ggml.scores")->size(), 32000u);
  auto types = f->get_i32_array("tokenizer.ggml.token_type");
  ASSERT_TRUE(types.ok());
  EXPECT_EQ((*types)[1], 3);  // CONTROL
  EXPECT_EQ(*f->get_u32("tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(*f->get_u32("tokenizer.ggml.eos_token_id"), 2u);
  EXPECT_TRUE(*f->get_bool("tokenizer.ggml.add_bos_token"));
}

TEST(GgufReader, Llama3VocabOpensQuickly) {
  const std::string path = kData + "/tokenizer/vocab-llama3.gguf";
  SKIP_IF_MISSING(path);
  auto start = std::chrono::steady_clock::now();
  auto f = File::Open(path);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->get_string_array("tokenizer.ggml.tokens")->size(), 128256u);
  EXPECT_EQ(f->get_string_array("tokenizer.ggml.merges")->size(), 280147u);
  EXPECT_EQ(*f->get_u32("tokenizer.ggml.bos_token_id"), 128000u);
  // Generous for sanitizer and debug builds; a release build takes about 0.1 s.
  EXPECT_LT(seconds, 5.0);
  std::printf("vocab-llama3.gguf opened in %.3f s\n", seconds);
}

TEST(GgufReader, MissingFileIsNotFound) {
  auto f = File::Open("/nonexistent/model.gguf");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("/nonexistent/model.gguf"));
}

TEST(GgufReader, DirectoryIsRejected) {
  auto f = File::Open(::testing::TempDir());
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("not a regular file"));
}

TEST(GgufReader, HeaderOnlyFileWithAllowMissingData) {
  Writer w;
  w.set("general.architecture", Value::str("llama"));
  std::vector<uint8_t> data(4096, 7);
  w.add_tensor("a", {1024}, DType::kF32, data);
  auto image = w.write_to_memory();
  ASSERT_TRUE(image.ok());
  auto full = File::Parse(*image, "full.gguf");
  ASSERT_TRUE(full.ok());
  std::vector<uint8_t> header(image->begin(),
                              image->begin() + static_cast<ptrdiff_t>(full->data_offset()));

  std::string path =
      ::testing::TempDir() + "/gguf_header_only_" + std::to_string(::getpid()) + ".gguf";
  FILE* out = std::fopen(path.c_str(), "wb");
  ASSERT_NE(out, nullptr);
  ASSERT_EQ(std::fwrite(header.data(), 1, header.size(), out), header.size());
  std::fclose(out);

  auto strict = File::Open(path);
  ASSERT_FALSE(strict.ok());
  EXPECT_THAT(
      std::string(strict.status().message()),
      HasSubstr("tensor 'a' data [" + std::to_string(full->data_offset()) + ", " +
                std::to_string(full->data_offset() + 4096) + ") extends past end of file (" +
                std::to_string(header.size()) + " bytes) at offset "));

  auto lenient = File::Open(path, {.allow_missing_data = true});
  ASSERT_TRUE(lenient.ok()) << lenient.status();
  ASSERT_EQ(lenient->tensors().size(), 1u);
  std::vector<uint8_t> dst(4096);
  absl::Status st = lenient->read_tensor(lenient->tensors()[0], dst.data());
  EXPECT_EQ(st.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(st.message()), HasSubstr(path));
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace tandem::gguf
