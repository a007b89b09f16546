// The decode path allocates nothing: every buffer is planned at load time.
#include <algorithm>
#include <filesystem>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/engine/engine.h"
#include "runtime/testing/test_model.h"
#include "tests/support/allocation_counter.h"

namespace tandem::engine {
namespace {

TEST(EngineAllocations, DecodeStepsAllocateNothing) {
  const std::string path = (std::filesystem::temp_directory_path() / "tandem-alloc.gguf").string();
  for (const char* type : {"f32", "q8_0", "q4_0", "f16"}) {
    testing::TestModelSpec spec;
    spec.type = *dtype_from_name(type);
    ASSERT_TRUE(testing::write_test_model(path, spec).ok());
    EngineOptions options;
    options.model_path = path;
    options.n_threads = 2;
    options.context_length = 64;
    options.max_batch_tokens = 8;
    auto e = Engine::Load(options);
    ASSERT_TRUE(e.ok()) << e.status();
    ASSERT_TRUE((*e)->open_sequence(0).ok());
    std::vector<int32_t> tokens = {1, 5, 9, 13}, positions = {0, 1, 2, 3}, seqs = {0, 0, 0, 0};
    ASSERT_TRUE((*e)->forward({tokens, positions, seqs, {}}).ok());
    int32_t token = 7, pos = 4;
    const int32_t seq = 0;
    const int64_t before = tandem::testing::allocations_in_process();
    for (int step = 0; step < 16; ++step, ++pos) {
      auto logits = (*e)->forward({std::span(&token, 1), std::span(&pos, 1), std::span(&seq, 1), {}});
      ASSERT_TRUE(logits.ok());
      token = static_cast<int32_t>(std::max_element(logits->begin(), logits->end()) - logits->begin());
    }
    EXPECT_EQ(tandem::testing::allocations_in_process() - before, 0) << type;
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace tandem::engine
