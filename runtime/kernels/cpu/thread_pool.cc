#include "runtime/kernels/cpu/thread_pool.h"

#include <algorithm>
#include <chrono>

#include "common/status.h"

namespace tandem::kernels {
namespace {

// How long an idle thread polls before it sleeps. Long enough to bridge the
// gaps between the matmuls of one decode step (norms, rope, attention), short
// enough not to burn a shared core between requests.
constexpr auto kSpinTime = std::chrono::microseconds(200);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Waits until `a` no longer holds `old`: polls for kSpinTime, then sleeps.
template <class T>
T wait_for_change(const std::atomic<T>& a, T old) {
  T v = a.load(std::memory_order_acquire);
  if (v != old) return v;
  const auto deadline = std::chrono::steady_clock::now() + kSpinTime;
  for (int i = 1;; ++i) {
    cpu_relax();
    v = a.load(std::memory_order_acquire);
    if (v != old) return v;
    if ((i & 63) == 0) {
      if (std::chrono::steady_clock::now() > deadline) break;
      // Gives the core away now and then: with more threads than free cores
      // (a busy machine), the thread we wait for may need it.
      std::this_thread::yield();
    }
  }
  for (;;) {
    a.wait(old, std::memory_order_acquire);
    v = a.load(std::memory_order_acquire);
    if (v != old) return v;
  }
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads) {
  TANDEM_CHECK(n_threads >= 1);
  workers_.reserve(n_threads - 1);
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::worker_loop(int index) {
  uint32_t seen = 0;
  for (;;) {
    seen = wait_for_change(generation_, seen);
    if (stop_.load(std::memory_order_relaxed)) return;
    (*job_)(index, n_threads_);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
  }
}

void ThreadPool::run(FunctionRef<void(int, int)> fn) {
  if (n_threads_ == 1) {
    fn(0, 1);
    return;
  }
  TANDEM_CHECK(!busy_.exchange(true, std::memory_order_acquire));  // one caller at a time
  job_ = &fn;
  pending_.store(n_threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  fn(0, n_threads_);
  for (int left = pending_.load(std::memory_order_acquire); left != 0;) {
    left = wait_for_change(pending_, left);
  }
  busy_.store(false, std::memory_order_release);
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t n_chunks = (n + grain - 1) / grain;
  if (n_threads_ == 1 || n_chunks == 1) {
    fn(0, n);
    return;
  }
  run([&](int i, int nth) {
    const int64_t c0 = n_chunks * i / nth;
    const int64_t c1 = n_chunks * (i + 1) / nth;
    const int64_t begin = c0 * grain;
    const int64_t end = std::min(n, c1 * grain);
    if (begin < end) fn(begin, end);
  });
}

void ThreadPool::parallel_for_dynamic(int64_t n, int64_t chunk,
                                      FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  chunk = std::max<int64_t>(chunk, 1);
  const int64_t n_chunks = (n + chunk - 1) / chunk;
  if (n_threads_ == 1 || n_chunks == 1) {
    fn(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  run([&](int, int) {
    for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < n_chunks;
         c = next.fetch_add(1, std::memory_order_relaxed)) {
      fn(c * chunk, std::min(n, (c + 1) * chunk));
    }
  });
}

}  // namespace tandem::kernels
