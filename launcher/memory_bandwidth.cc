#include "launcher/memory_bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace tandem::launcher {
namespace {

// Eight independent accumulators keep the loads in flight; the sum is returned
// so the compiler cannot drop the reads.
uint64_t read_range(const uint64_t* p, size_t n) {
  uint64_t a[8] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) a[k] += p[i + k];
  }
  for (; i < n; ++i) a[0] += p[i];
  uint64_t s = 0;
  for (uint64_t v : a) s += v;
  return s;
}

}  // namespace

double measure_read_bandwidth(int n_threads, size_t bytes, int repetitions) {
  const size_t n = bytes / sizeof(uint64_t);
  std::vector<uint64_t> buffer(n);
  // Touch every page first (each thread its own part) so the pass measures reads only.
  for (size_t i = 0; i < n; ++i) buffer[i] = i;
  double best = 0;
  std::vector<uint64_t> sink(n_threads);
  for (int r = 0; r < repetitions; ++r) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < n_threads; ++t) {
      threads.emplace_back([&, t] {
        const size_t begin = n * t / n_threads;
        const size_t end = n * (t + 1) / n_threads;
        sink[t] = read_range(buffer.data() + begin, end - begin);
      });
    }
    for (auto& th : threads) th.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, static_cast<double>(n * sizeof(uint64_t)) / s);
  }
  volatile uint64_t keep = 0;
  for (uint64_t v : sink) keep = keep + v;
  return best;
}

}  // namespace tandem::launcher
