#include "tests/support/allocation_counter.h"

#include <atomic>
#include <cstdlib>
#include <new>

namespace {
std::atomic<int64_t> g_allocations{0};
thread_local int64_t t_allocations = 0;
// Out of line, so that GCC 12 does not pair malloc and free across operators.
[[gnu::noinline]] void* counted_malloc(size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  ++t_allocations;
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

namespace tandem::testing {

int64_t allocations_in_process() { return g_allocations.load(std::memory_order_relaxed); }
int64_t allocations_on_this_thread() { return t_allocations; }

}  // namespace tandem::testing
