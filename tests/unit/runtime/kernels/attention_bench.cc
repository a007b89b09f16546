// Attention kernel throughput on the 1b test shape (32 query heads over 4 KV
// heads of 64) in one layer: decode (one token after `context` positions) and
// a causal prefill of `tokens` tokens, f16 and f32 caches, against the scalar
// per-(token, head) loop that the engine ran before this kernel.
//   attention_bench --benchmark_filter=decode
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "runtime/kernels/cpu/attention.h"
#include "runtime/kernels/cpu/convert.h"

namespace tandem::kernels {
namespace {

constexpr AttentionShape kShape{32, 4, 64};
constexpr int64_t kBlock = 16;

struct Cache {
  Cache(int64_t positions, DType type) : type(type) {
    const int64_t n_blocks = (positions + kBlock - 1) / kBlock;
    table.resize(n_blocks);
    std::iota(table.begin(), table.end(), 0);
    tables = {table.data()};
    const int64_t n = n_blocks * 2 * kShape.n_kv_heads * kBlock * kShape.head_dim;
    std::mt19937 rng(1);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    f32.resize(n);
    for (float& x : f32) x = dist(rng);
    f16.resize(n);
    for (int64_t i = 0; i < n; ++i) f16[i] = f32_to_fp16(f32[i]);
  }
  KvLayerView view() const {
    KvLayerView v;
    v.type = type;
    const int64_t head = kBlock * kShape.head_dim;
    const int64_t v_off = kShape.n_kv_heads * head;
    v.k = type == DType::kF16 ? static_cast<const void*>(f16.data()) : f32.data();
    v.v = type == DType::kF16 ? static_cast<const void*>(f16.data() + v_off) : f32.data() + v_off;
    v.block_stride = 2 * v_off;
    v.head_stride = head;
    v.block_size = kBlock;
    v.block_tables = tables.data();
    return v;
  }
  DType type;
  std::vector<int32_t> table;
  std::vector<const int32_t*> tables;
  std::vector<float> f32;
  std::vector<uint16_t> f16;
};

// The engine's attention before the kernel: one (token, head) pair at a
// time, scalar, with a score per position.
void scalar_attention(const KvLayerView& kv, std::span<const int32_t> positions, const float* q,
                      float* out, std::vector<float>& scores, ThreadPool& pool) {
  const int64_t hd = kShape.head_dim, group = kShape.n_heads / kShape.n_kv_heads;
  const int64_t n_items = static_cast<int64_t>(positions.size()) * kShape.n_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const auto* base = static_cast<const float*>(kv.k);
  pool.run([&](int thread, int n_threads) {
    float* s = scores.data() + thread * (scores.size() / n_threads);
    for (int64_t item = thread; item < n_items; item += n_threads) {
      const int64_t i = item / kShape.n_heads, h = item % kShape.n_heads, kvh = h / group;
      const int64_t n_pos = positions[i] + 1;
      const float* qh = q + item * hd;
      float* o = out + item * hd;
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t p = 0; p < n_pos; ++p) {
        const float* k = base + (p / kBlock) * kv.block_stride + kvh * kv.head_stride +
                         (p % kBlock) * hd;
        float d = 0;
        for (int64_t j = 0; j < hd; ++j) d += qh[j] * k[j];
        s[p] = d * scale;
        m = std::max(m, s[p]);
      }
      double sum = 0;
      for (int64_t p = 0; p < n_pos; ++p) sum += (s[p] = std::exp(s[p] - m));
      std::fill_n(o, hd, 0.0f);
      for (int64_t p = 0; p < n_pos; ++p) {
        const float* v = static_cast<const float*>(kv.v) + (p / kBlock) * kv.block_stride +
                         kvh * kv.head_stride + (p % kBlock) * hd;
        const float w = static_cast<float>(s[p] / sum);
        for (int64_t j = 0; j < hd; ++j) o[j] += w * v[j];
      }
    }
  });
}

// mode 0: the kernel on an f16 cache, 1: on f32, 2: the scalar loop (f32).
void run(benchmark::State& state, int64_t tokens, int64_t context, int mode) {
  const int threads = static_cast<int>(state.range(0));
  const int64_t total = context + tokens;
  Cache cache(total, mode == 0 ? DType::kF16 : DType::kF32);
  std::vector<int32_t> seq_ids(tokens, 0), positions(tokens);
  for (int64_t i = 0; i < tokens; ++i) positions[i] = static_cast<int32_t>(context + i);
  std::vector<float> q(tokens * kShape.n_heads * kShape.head_dim, 0.1f), out(q.size());
  ThreadPool pool(threads);
  auto ws = AttentionWorkspace::Create(kShape, tokens, kBlock, threads);
  std::vector<float> scores(threads * total);
  for (auto _ : state) {
    if (mode == 2) {
      scalar_attention(cache.view(), positions, q.data(), out.data(), scores, pool);
    } else {
      attention(cache.view(), seq_ids, positions, q.data(), out.data(), *ws, pool);
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens),
                                                  benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Decode2048(benchmark::State& s, int mode) { run(s, 1, 2048, mode); }
void BM_Prefill512(benchmark::State& s, int mode) { run(s, 512, 0, mode); }

BENCHMARK_CAPTURE(BM_Decode2048, decode_f16, 0)->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK_CAPTURE(BM_Decode2048, decode_f32, 1)->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK_CAPTURE(BM_Decode2048, decode_scalar_f32, 2)->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK_CAPTURE(BM_Prefill512, prefill_f16, 0)->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK_CAPTURE(BM_Prefill512, prefill_f32, 1)->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK_CAPTURE(BM_Prefill512, prefill_scalar_f32, 2)->Arg(1)->Arg(2)->UseRealTime();

}  // namespace
}  // namespace tandem::kernels

BENCHMARK_MAIN();
