#include "launcher/memory_bandwidth.h"

#include "runtime/tensor/host_buffer.h"

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

// Reads [p, p + n) as four concurrent streams, one cache line of each per
// step, each prefetched 512 bytes ahead: one core reaches the memory
// bandwidth only with several streams in flight (the decode kernels read
// several row groups at once for the same reason), and the prefetches added
// 5-8% here (Zen 3), enough that no decode kernel read faster than this bound.
// The sum is returned so the compiler cannot drop the reads. SSE2 is the
// x86-64 baseline, so no dispatch is needed.
uint64_t read_range(const uint64_t* p, size_t n) {
  constexpr size_t kStreams = 4;
  constexpr size_t kLine = 8;  // uint64 per 64-byte line
  constexpr size_t kAhead = 8 * kLine;
  const size_t per_stream = n / kStreams / kLine * kLine;
  uint64_t out = 0;
#if defined(__SSE2__)
  __m128i acc[kStreams] = {};
  for (size_t i = 0; i < per_stream; i += kLine) {
    for (size_t s = 0; s < kStreams; ++s) {
      __builtin_prefetch(p + s * per_stream + i + kAhead);
      const auto* line = reinterpret_cast<const __m128i*>(p + s * per_stream + i);
      const __m128i a = _mm_add_epi64(_mm_load_si128(line), _mm_load_si128(line + 1));
      const __m128i b = _mm_add_epi64(_mm_load_si128(line + 2), _mm_load_si128(line + 3));
      acc[s] = _mm_add_epi64(acc[s], _mm_add_epi64(a, b));
    }
  }
  for (const __m128i& a : acc) {
    out += static_cast<uint64_t>(_mm_cvtsi128_si64(a)) +
           static_cast<uint64_t>(_mm_cvtsi128_si64(_mm_unpackhi_epi64(a, a)));
  }
#else
  uint64_t acc[kStreams] = {};
  for (size_t i = 0; i < per_stream; i += kLine) {
    for (size_t s = 0; s < kStreams; ++s) {
      __builtin_prefetch(p + s * per_stream + i + kAhead);
      for (size_t k = 0; k < kLine; ++k) acc[s] += p[s * per_stream + i + k];
    }
  }
  for (uint64_t a : acc) out += a;
#endif
  for (size_t i = per_stream * kStreams; i < n; ++i) out += p[i];
  return out;
}

}  // namespace

absl::StatusOr<ReadProbe> ReadProbe::Create(size_t bytes) {
  // The same kind of memory as the weights (populated huge pages), so that
  // the bound and the decode speed see the same TLB behaviour.
  auto memory = HostBuffer::Allocate(bytes / sizeof(uint64_t) * sizeof(uint64_t));
  if (!memory.ok()) return memory.status();
  uint64_t* words = memory->as<uint64_t>();
  for (size_t i = 0; i < memory->size() / sizeof(uint64_t); ++i) words[i] = i;
  return ReadProbe(*std::move(memory));
}

double ReadProbe::measure(int n_threads, int repetitions) const {
  const size_t n = memory_.size() / sizeof(uint64_t);
  const uint64_t* buffer = memory_.as<uint64_t>();
  double best = 0;
  std::vector<uint64_t> sink(n_threads);
  for (int r = 0; r < repetitions; ++r) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < n_threads; ++t) {
      threads.emplace_back([&, t] {
        // Line-aligned boundaries keep every 16-byte load aligned.
        const size_t begin = n * t / n_threads / 8 * 8;
        const size_t end = t + 1 == n_threads ? n : n * (t + 1) / n_threads / 8 * 8;
        sink[t] = read_range(buffer + begin, end - begin);
      });
    }
    for (auto& th : threads) th.join();
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, static_cast<double>(n * sizeof(uint64_t)) / s);
  }
  volatile uint64_t keep = 0;
  for (uint64_t v : sink) keep = keep + v;
  return best;
}

}  // namespace tandem::launcher
