// Matmul throughput on a 2048 x 5632 matrix (a TinyLlama FFN projection):
// weight GB/s for decode (one token, bandwidth-bound) and tokens/s for a
// 128-token prefill batch, per type, thread count and Isa.
//   kernels_bench --benchmark_filter=q8_0
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "runtime/kernels/cpu/convert.h"
#include "runtime/kernels/cpu/matmul.h"

namespace tandem::kernels {
namespace {

constexpr int64_t kRows = 2048;
constexpr int64_t kCols = 5632;

// Copies of the matrix, together larger than any L3 cache, taken in turn so
// that decode measures memory bandwidth rather than cache bandwidth.
constexpr size_t kRotationBytes = size_t{192} << 20;

struct Weights {
  std::vector<std::vector<uint8_t>> copies;
  size_t bytes = 0;
};

const Weights& weights(DType type) {
  static std::vector<std::pair<DType, Weights*>> cache;
  for (auto& [t, w] : cache) {
    if (t == type) return *w;
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
  const size_t n_copies = (kRotationBytes + w->bytes - 1) / w->bytes;
  w->copies.assign(n_copies, data);
  cache.emplace_back(type, w);
  return *w;
}

void BM_Matmul(benchmark::State& state, DType type, Isa isa) {
  const int64_t n_tokens = state.range(0);
  const int n_threads = static_cast<int>(state.range(1));
  const Weights& w = weights(type);
  std::vector<float> x(n_tokens * kCols, 0.5f);
  std::vector<float> y(n_tokens * kRows);
  std::vector<uint8_t> scratch(matmul_scratch_bytes(type, kCols, n_tokens));
  ThreadPool pool(n_threads);
  size_t next = 0;
  for (auto _ : state) {
    const Matrix m{type, w.copies[next].data(), kRows, kCols};
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

void register_all() {
  for (Isa isa : available_isas()) {
    for (DType type : {DType::kQ8_0, DType::kQ4_0, DType::kF16, DType::kBF16, DType::kF32}) {
      const std::string name =
          "matmul/" + std::string(dtype_name(type)) + "/" + std::string(isa_name(isa));
      auto* b = benchmark::RegisterBenchmark(name.c_str(), BM_Matmul, type, isa);
      b->ArgNames({"tokens", "threads"})->UseRealTime()->Unit(benchmark::kMicrosecond);
      for (int threads : {1, 2}) {
        b->Args({1, threads});
        if (isa != Isa::kPortable) b->Args({128, threads});
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
