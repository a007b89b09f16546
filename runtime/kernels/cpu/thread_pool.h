// A fixed set of worker threads for the fork-join parallelism of the CPU
// kernels. A decode step calls the pool hundreds of times per token, so a
// dispatch must cost microseconds: workers spin for a short while after each
// job before they sleep on a futex (std::atomic::wait), and run() allocates
// nothing and creates no threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "runtime/kernels/cpu/function_ref.h"

namespace tandem::kernels {

class ThreadPool {
 public:
  // n_threads counts the calling thread too (>= 1): n_threads - 1 workers are
  // started here, once.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int n_threads() const { return n_threads_; }

  // Runs fn(thread_index, n_threads) once on every thread; the caller runs
  // index 0. Returns when all are done. One caller at a time; fn must not call
  // back into the same pool.
  void run(FunctionRef<void(int, int)> fn);

  // Splits [0, n) into at most n_threads contiguous ranges whose boundaries are
  // multiples of `grain` (except the end, n) and calls fn(begin, end) on each
  // non-empty one. Runs inline on the caller when there is a single chunk.
  void parallel_for(int64_t n, int64_t grain, FunctionRef<void(int64_t, int64_t)> fn);

  // Calls fn(begin, end) on the chunks [k * chunk, (k + 1) * chunk) of [0, n)
  // (the last one cut at n), which the threads take in turn from a shared
  // counter: a thread that the machine delays (another process on its core)
  // leaves its chunks to the others instead of holding everyone at the join.
  // Runs inline on the caller when there is a single thread or chunk.
  void parallel_for_dynamic(int64_t n, int64_t chunk, FunctionRef<void(int64_t, int64_t)> fn);

 private:
  void worker_loop(int index);

  const int n_threads_;
  std::vector<std::thread> workers_;
  // The job: written by the caller before the release increment of
  // generation_, read by the workers after their acquire load of it.
  const FunctionRef<void(int, int)>* job_ = nullptr;
  alignas(64) std::atomic<uint32_t> generation_{0};
  alignas(64) std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> busy_{false};
};

}  // namespace tandem::kernels
