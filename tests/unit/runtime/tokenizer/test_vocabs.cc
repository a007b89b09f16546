#include "tests/unit/runtime/tokenizer/test_vocabs.h"

#include <chrono>

#include "gtest/gtest.h"

namespace tandem::tokenizer::testing {
namespace {

double g_llama3_load_ms = -1.0;

std::unique_ptr<Tokenizer> load(const std::string& name, double* ms) {
  const auto start = std::chrono::steady_clock::now();
  auto file = gguf::File::Open(data_path(name));
  if (!file.ok()) {
    ADD_FAILURE() << file.status();
    return nullptr;
  }
  auto tokenizer = Tokenizer::FromGguf(*file);
  if (!tokenizer.ok()) {
    ADD_FAILURE() << tokenizer.status();
    return nullptr;
  }
  if (ms != nullptr) {
    *ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  }
  return std::move(tokenizer).value();
}

}  // namespace

std::string data_path(const std::string& name) {
  return std::string(TANDEM_TEST_DATA_DIR) + "/tokenizer/" + name;
}

const Tokenizer* llama2() {
  static const std::unique_ptr<Tokenizer> tokenizer = load("vocab-llama2.gguf", nullptr);
  return tokenizer.get();
}

const Tokenizer* llama3() {
  static const std::unique_ptr<Tokenizer> tokenizer = load("vocab-llama3.gguf", &g_llama3_load_ms);
  return tokenizer.get();
}

double llama3_load_ms() {
  llama3();
  return g_llama3_load_ms;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> FromWriter(const gguf::Writer& writer) {
  auto bytes = writer.write_to_memory();
  if (!bytes.ok()) return bytes.status();
  auto file = gguf::File::Parse(*bytes, "in-memory.gguf");
  if (!file.ok()) return file.status();
  return Tokenizer::FromGguf(*file);
}

}  // namespace tandem::tokenizer::testing
