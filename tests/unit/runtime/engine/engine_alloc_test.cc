// The decode path allocates nothing: every buffer is planned at load time.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <new>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/engine/engine.h"
#include "runtime/testing/test_model.h"

namespace {
std::atomic<int64_t> g_allocations{0};
// Out of line, so that GCC 12 does not pair malloc and free across operators.
[[gnu::noinline]] void* counted_malloc(size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n == 0 ? 1 : n);
}
[[gnu::noinline]] void counted_free(void* p) { std::free(p); }
}  // namespace

void* operator new(size_t n) {
  if (void* p = counted_malloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) { return operator new(n); }
// The nothrow forms too (std::stable_sort's temporary buffer uses them), so
// that no allocation comes from one family and is freed by the other.
void* operator new(size_t n, const std::nothrow_t&) noexcept { return counted_malloc(n); }
void* operator new[](size_t n, const std::nothrow_t&) noexcept { return counted_malloc(n); }
void operator delete(void* p, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, size_t) noexcept { counted_free(p); }
void operator delete[](void* p, size_t) noexcept { counted_free(p); }

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
    const int64_t before = g_allocations.load();
    for (int step = 0; step < 16; ++step, ++pos) {
      auto logits = (*e)->forward({std::span(&token, 1), std::span(&pos, 1), std::span(&seq, 1), {}});
      ASSERT_TRUE(logits.ok());
      token = static_cast<int32_t>(std::max_element(logits->begin(), logits->end()) - logits->begin());
    }
    EXPECT_EQ(g_allocations.load() - before, 0) << type;
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace tandem::engine
