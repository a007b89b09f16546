#include "runtime/kernels/cpu/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace tandem::kernels {
namespace {

TEST(ThreadPool, RunCallsEveryIndexOnce) {
  for (int n = 1; n <= 4; ++n) {
    ThreadPool pool(n);
    EXPECT_EQ(pool.n_threads(), n);
    for (int rep = 0; rep < 200; ++rep) {
      std::vector<std::atomic<int>> hits(n);
      pool.run([&](int i, int nth) {
        ASSERT_EQ(nth, n);
        hits[i].fetch_add(1, std::memory_order_relaxed);
      });
      for (int i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << n << " " << i;
    }
  }
}

TEST(ThreadPool, CallerRunsIndexZero) {
  ThreadPool pool(3);
  const auto caller = std::this_thread::get_id();
  std::thread::id seen;
  pool.run([&](int i, int) {
    if (i == 0) seen = std::this_thread::get_id();
  });
  EXPECT_EQ(seen, caller);
}

TEST(ThreadPool, ParallelForCoversRangeOnceOnGrainBoundaries) {
  for (int n_threads = 1; n_threads <= 4; ++n_threads) {
    ThreadPool pool(n_threads);
    for (int64_t n : {0, 1, 2, 3, 5, 16, 17, 100, 1023}) {
      for (int64_t grain : {1, 2, 4, 7, 64}) {
        std::vector<std::atomic<int>> hits(n);
        std::atomic<int> calls{0};
        pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
          calls.fetch_add(1);
          EXPECT_LT(b, e);
          EXPECT_EQ(b % grain, 0);
          EXPECT_TRUE(e == n || e % grain == 0);
          for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1, std::memory_order_relaxed);
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << n << " " << grain;
        EXPECT_LE(calls.load(), n_threads);
      }
    }
  }
}

TEST(ThreadPool, DynamicParallelForCoversRangeOnceInChunks) {
  for (int n_threads = 1; n_threads <= 4; ++n_threads) {
    ThreadPool pool(n_threads);
    for (int64_t n : {0, 1, 2, 3, 5, 16, 17, 100, 1023}) {
      for (int64_t chunk : {1, 2, 7, 64, 2000}) {
        std::vector<std::atomic<int>> hits(n);
        std::atomic<int> calls{0};
        pool.parallel_for_dynamic(n, chunk, [&](int64_t b, int64_t e) {
          calls.fetch_add(1);
          EXPECT_LT(b, e);
          EXPECT_EQ(b % chunk, 0);
          EXPECT_TRUE(e == n || e - b == chunk);
          for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1, std::memory_order_relaxed);
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << n << " " << chunk;
        EXPECT_EQ(calls.load(), n_threads == 1 ? (n > 0 ? 1 : 0) : (n + chunk - 1) / chunk);
      }
    }
  }
}

TEST(ThreadPool, RepeatedRunsSeeEachOthersWrites) {
  ThreadPool pool(4);
  std::vector<int64_t> data(4096, 0);  // plain ints: the pool must order them
  for (int rep = 0; rep < 2000; ++rep) {
    pool.parallel_for(static_cast<int64_t>(data.size()), 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) data[i] += i;
    });
  }
  for (size_t i = 0; i < data.size(); ++i) ASSERT_EQ(data[i], 2000 * static_cast<int64_t>(i));
}

TEST(ThreadPool, WakesWorkersThatWentToSleep) {
  ThreadPool pool(3);
  std::atomic<int> total{0};
  for (int rep = 0; rep < 5; ++rep) {
    std::this_thread::sleep_for(std::chrono::milliseconds(3));  // past the spin window
    pool.run([&](int, int) { total.fetch_add(1); });
  }
  EXPECT_EQ(total.load(), 15);
}

TEST(ThreadPool, DestroysIdleAndFreshPools) {
  for (int n = 1; n <= 4; ++n) {
    ThreadPool fresh(n);
  }
  ThreadPool used(2);
  used.run([](int, int) {});
}

}  // namespace
}  // namespace tandem::kernels
