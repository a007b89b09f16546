#include "launcher/memory_bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace tandem::launcher {
namespace {

// Independent accumulators keep many loads in flight; the sum is returned so
// the compiler cannot drop the reads. SSE2 is the x86-64 baseline, so no
// dispatch is needed; 16-byte loads already outrun DRAM on one core.
uint64_t read_range(const uint64_t* p, size_t n) {
#if defined(__SSE2__)
  __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    a0 = _mm_add_epi64(a0, _mm_load_si128(reinterpret_cast<const __m128i*>(p + i)));
    a1 = _mm_add_epi64(a1, _mm_load_si128(reinterpret_cast<const __m128i*>(p + i + 2)));
    a2 = _mm_add_epi64(a2, _mm_load_si128(reinterpret_cast<const __m128i*>(p + i + 4)));
    a3 = _mm_add_epi64(a3, _mm_load_si128(reinterpret_cast<const __m128i*>(p + i + 6)));
  }
  const __m128i s = _mm_add_epi64(_mm_add_epi64(a0, a1), _mm_add_epi64(a2, a3));
  uint64_t out = static_cast<uint64_t>(_mm_cvtsi128_si64(s)) +
                 static_cast<uint64_t>(_mm_cvtsi128_si64(_mm_unpackhi_epi64(s, s)));
  for (; i < n; ++i) out += p[i];
  return out;
#else
  uint64_t a[4] = {};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int k = 0; k < 4; ++k) a[k] += p[i + k];
  }
  for (; i < n; ++i) a[0] += p[i];
  return a[0] + a[1] + a[2] + a[3];
#endif
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
        // Even boundaries keep every 16-byte load aligned.
        const size_t begin = n * t / n_threads / 2 * 2;
        const size_t end = t + 1 == n_threads ? n : n * (t + 1) / n_threads / 2 * 2;
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
