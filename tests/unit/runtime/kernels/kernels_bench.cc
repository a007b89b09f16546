// Matmul throughput on a 2048 x 5632 matrix (a TinyLlama FFN projection):
// weight GB/s for decode (one token, bandwidth-bound) and tokens/s for a
// 128- and 512-token prefill batch, per type, layout, thread count and Isa. The
// weights live in HostBuffer memory (huge pages), as the engine's do: with
// 4 KiB pages TLB misses would halve the decode numbers.
//   kernels_bench --benchmark_filter=q8_0
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "runtime/kernels/cpu/convert.h"
#include "runtime/kernels/cpu/matmul.h"
#include "runtime/tensor/host_buffer.h"

namespace tandem::kernels {
namespace {

constexpr int64_t kRows = 2048;
constexpr int64_t kCols = 5632;

// Copies of the matrix, together larger than any L3 cache, taken in turn so
// that decode measures memory bandwidth rather than cache bandwidth.
constexpr size_t kRotationBytes = size_t{192} << 20;

struct Weights {
  std::vector<HostBuffer> copies;
  size_t bytes = 0;
};

const Weights& weights(DType type, Layout layout) {
  static std::vector<std::pair<std::pair<DType, Layout>, Weights*>> cache;
  for (auto& [key, w] : cache) {
    if (key == std::make_pair(type, layout)) return *w;
  }
  auto* w = new Weights;  // lives for the process
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<float> row(kCols);
  const size_t rb = row_bytes(type, kCols);
  w->bytes = rb * kRows;
  std::vector<uint8_t> data(w->bytes);
  for (int64_t r = 0; r < kRows; ++r) {
    for (float& f : row) f = dist(rng);
    (void)quantize_row(type, row.data(), data.data() + r * rb, kCols);
  }
  if (layout == Layout::kPacked) {
    std::vector<uint8_t> packed(packed_bytes(type, kRows, kCols));
    pack({type, data.data(), kRows, kCols}, packed.data());
    data.swap(packed);
    w->bytes = data.size();
  }
  const size_t n_copies = (kRotationBytes + w->bytes - 1) / w->bytes;
  for (size_t i = 0; i < n_copies; ++i) {
    auto buffer = HostBuffer::Allocate(data.size());
    if (!buffer.ok()) std::abort();
    std::memcpy(buffer->data(), data.data(), data.size());
    w->copies.push_back(std::move(*buffer));
  }
  cache.emplace_back(std::make_pair(type, layout), w);
  return *w;
}

void BM_Matmul(benchmark::State& state, DType type, Layout layout, Isa isa) {
  const int64_t n_tokens = state.range(0);
  const int n_threads = static_cast<int>(state.range(1));
  const Weights& w = weights(type, layout);
  std::vector<float> x(n_tokens * kCols, 0.5f);
  std::vector<float> y(n_tokens * kRows);
  std::vector<uint8_t> scratch(matmul_scratch_bytes(type, kCols, n_tokens));
  ThreadPool pool(n_threads);
  size_t next = 0;
  for (auto _ : state) {
    const Matrix m{type, w.copies[next].data(), kRows, kCols, layout};
    next = (next + 1) % w.copies.size();
    matmul(m, x.data(), kCols, n_tokens, y.data(), kRows, scratch, pool, isa);
    benchmark::DoNotOptimize(y.data());
  }
  const double bytes = static_cast<double>(w.bytes);
  state.counters["GB/s"] =
      benchmark::Counter(bytes * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  state.counters["tok/s"] = benchmark::Counter(static_cast<double>(n_tokens) * state.iterations(),
                                               benchmark::Counter::kIsRate);
}

// pack() at load time: row-major bytes packed per second, in place as the
// weight store does (the matrix is re-copied outside the timing).
void BM_Pack(benchmark::State& state, DType type) {
  const Weights& w = weights(type, Layout::kRowMajor);
  ThreadPool pool(static_cast<int>(state.range(0)));
  std::vector<uint8_t> data(packed_bytes(type, kRows, kCols));
  for (auto _ : state) {
    state.PauseTiming();
    std::memcpy(data.data(), w.copies[0].data(), w.bytes);
    state.ResumeTiming();
    pack({type, data.data(), kRows, kCols}, data.data(), &pool);
    benchmark::DoNotOptimize(data.data());
  }
  const double bytes = static_cast<double>(w.bytes) * state.iterations();
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsRate);
}

// A plain read of the same rotating copies of the q4_0 matrix, split over the
// threads as matmul splits rows: the bound the decode numbers are measured
// against (GB/s of kernel / GB/s of read = fraction of bound).
void BM_Read(benchmark::State& state) {
  const int n_threads = static_cast<int>(state.range(0));
  const Weights& w = weights(DType::kQ4_0, Layout::kRowMajor);
  ThreadPool pool(n_threads);
  std::vector<uint64_t> sinks(static_cast<size_t>(n_threads) * 8);
  size_t next = 0;
  const int64_t n_words = static_cast<int64_t>(w.bytes / sizeof(uint64_t)) / 8 * 8;
  for (auto _ : state) {
    const auto* data = reinterpret_cast<const uint64_t*>(w.copies[next].data());
    next = (next + 1) % w.copies.size();
    pool.run([&](int i, int nth) {
      const int64_t begin = n_words * i / nth / 8 * 8;
      const int64_t end = n_words * (i + 1) / nth / 8 * 8;
#if defined(__SSE2__)
      // As tandem bench's read loop: SSE2, four independent accumulators.
      __m128i a[4] = {};
      for (int64_t k = begin; k < end; k += 8) {
        for (int j = 0; j < 4; ++j) {
          a[j] = _mm_add_epi64(a[j],
                               _mm_load_si128(reinterpret_cast<const __m128i*>(data + k + 2 * j)));
        }
      }
      for (int j = 0; j < 4; ++j)
        sinks[i * 8 + j] += static_cast<uint64_t>(_mm_cvtsi128_si64(a[j]));
#else
      uint64_t acc[8] = {};
      for (int64_t k = begin; k < end; k += 8) {
        for (int j = 0; j < 8; ++j) acc[j] += data[k + j];
      }
      for (int j = 0; j < 8; ++j) sinks[i * 8 + j] += acc[j];
#endif
    });
    benchmark::DoNotOptimize(sinks.data());
  }
  state.counters["GB/s"] = benchmark::Counter(
      static_cast<double>(n_words) * 8 * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}

void register_all() {
  benchmark::RegisterBenchmark("read-bound", BM_Read)
      ->ArgNames({"threads"})
      ->Arg(1)
      ->Arg(2)
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
  for (DType type : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ4_K,
                     DType::kQ5_K, DType::kQ6_K}) {
    benchmark::RegisterBenchmark(("pack/" + std::string(dtype_name(type))).c_str(), BM_Pack, type)
        ->ArgNames({"threads"})
        ->Arg(1)
        ->Arg(2)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  for (Isa isa : available_isas()) {
    for (DType type : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ4_K,
                        DType::kQ5_K, DType::kQ6_K, DType::kF16, DType::kBF16, DType::kF32}) {
      for (Layout layout : {Layout::kRowMajor, Layout::kPacked}) {
        if (layout == Layout::kPacked && !pack_supported(type)) continue;
        const std::string name = "matmul/" + std::string(dtype_name(type)) +
                                 (layout == Layout::kPacked ? "-packed/" : "/") +
                                 std::string(isa_name(isa));
        auto* b = benchmark::RegisterBenchmark(name.c_str(), BM_Matmul, type, layout, isa);
        b->ArgNames({"tokens", "threads"})->UseRealTime()->Unit(benchmark::kMicrosecond);
        for (int threads : {1, 2}) {
          b->Args({1, threads});
          if (isa != Isa::kPortable) b->Args({128, threads});
          // A long prompt's activations outgrow L2 (the loop blocks tokens).
          if (isa != Isa::kPortable && layout == Layout::kPacked) b->Args({512, threads});
        }
      }
    }
  }
}

}  // namespace
}  // namespace tandem::kernels

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  tandem::kernels::register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
