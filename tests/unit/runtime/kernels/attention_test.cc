// The attention kernel against a float64 reference, on awkward shapes: head
// sizes 64, 128 and 72 (an odd multiple of 8), GQA groups 1, 4 and 8, block
// sizes 16 and 5 (positions never a multiple of either), batches mixing decode tokens and prefill runs of several
// sequences, f32 and f16 caches, every ISA this machine runs, one thread and
// several (with and without the split-K decode path). Cache positions that no
// token may see hold NaN, so any read past the causal limit shows.
#include "runtime/kernels/cpu/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "runtime/kernels/cpu/convert.h"

namespace tandem::kernels {
namespace {

struct Token {
  int32_t seq;
  int32_t pos;
};

struct Case {
  std::string name;
  AttentionShape shape;
  int64_t block_size;
  std::vector<Token> tokens;
};

// Tokens [first, last] of one sequence, in order.
void add_run(std::vector<Token>& tokens, int32_t seq, int32_t first, int32_t last) {
  for (int32_t p = first; p <= last; ++p) tokens.push_back({seq, p});
}

std::vector<Case> cases() {
  std::vector<Case> out;
  const AttentionShape shapes[] = {{8, 8, 64}, {16, 4, 128}, {8, 1, 72}, {32, 4, 64}};
  for (const AttentionShape& s : shapes) {
    for (int64_t bs : {16, 5}) {
      // Blocks of 5 (tails in every SIMD loop) on two shapes only: the test
      // also runs under qemu.
      if (bs == 5 && s.n_kv_heads != 1 && s.n_heads != 32) continue;
      const std::string tag = "h" + std::to_string(s.n_heads) + "_kv" +
                              std::to_string(s.n_kv_heads) + "_d" + std::to_string(s.head_dim) +
                              "_bs" + std::to_string(bs);
      out.push_back({"decode_one_" + tag, s, bs, {{0, 77}}});
      out.push_back({"decode_three_" + tag, s, bs, {{0, 37}, {1, 0}, {2, 100}}});
      std::vector<Token> mixed;
      add_run(mixed, 1, 20, 45);  // a prefill continuing a cached prefix
      mixed.push_back({0, 9});    // a decode token in the same step
      add_run(mixed, 2, 0, 12);   // a prompt from the start
      out.push_back({"mixed_" + tag, s, bs, mixed});
      std::vector<Token> prompt;
      add_run(prompt, 0, 0, 70);
      out.push_back({"prefill_" + tag, s, bs, prompt});
      out.push_back({"two_of_one_" + tag, s, bs, {{3, 40}, {3, 41}}});
    }
  }
  return out;
}

// A paged cache of one layer with 4 sequences, blocks handed out shuffled.
struct TestCache {
  TestCache(const AttentionShape& s, int64_t bs, DType type, int64_t max_len, std::mt19937& rng)
      : shape(s), block_size(bs), type(type) {
    const int64_t per_seq = (max_len + bs - 1) / bs;
    n_blocks = 4 * per_seq;
    std::vector<int32_t> ids(n_blocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    tables.assign(4, {});
    for (int64_t q = 0; q < 4; ++q) {
      tables[q].assign(ids.begin() + q * per_seq, ids.begin() + (q + 1) * per_seq);
    }
    for (const auto& t : tables) table_ptrs.push_back(t.data());
    head_stride = bs * s.head_dim;
    block_stride = 2 * s.n_kv_heads * head_stride;
    const int64_t n = n_blocks * block_stride;
    values.assign(n, std::numeric_limits<double>::quiet_NaN());
    f32.assign(n, std::numeric_limits<float>::quiet_NaN());
    f16.assign(n, 0x7e00);  // NaN
  }

  int64_t offset(int32_t seq, int64_t pos, int64_t h, int kv) const {
    return tables[seq][pos / block_size] * block_stride + kv * shape.n_kv_heads * head_stride +
           h * head_stride + (pos % block_size) * shape.head_dim;
  }

  // Fills positions [0, n) of `seq` with random keys and values.
  void fill(int32_t seq, int64_t n, std::mt19937& rng) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    for (int64_t p = 0; p < n; ++p) {
      for (int64_t h = 0; h < shape.n_kv_heads; ++h) {
        for (int kv = 0; kv < 2; ++kv) {
          const int64_t o = offset(seq, p, h, kv);
          for (int64_t d = 0; d < shape.head_dim; ++d) {
            // Keys scaled up so that the softmax is peaked, not uniform.
            const float x = dist(rng) * (kv == 0 ? 2.0f : 1.0f);
            f16[o + d] = f32_to_fp16(x);
            f32[o + d] = type == DType::kF16 ? fp16_to_f32(f16[o + d]) : x;
            values[o + d] = f32[o + d];
          }
        }
      }
    }
  }

  KvLayerView view() const {
    KvLayerView v;
    v.type = type;
    const int64_t v_offset = shape.n_kv_heads * head_stride;
    if (type == DType::kF16) {
      v.k = f16.data();
      v.v = f16.data() + v_offset;
    } else {
      v.k = f32.data();
      v.v = f32.data() + v_offset;
    }
    v.block_stride = block_stride;
    v.head_stride = head_stride;
    v.block_size = block_size;
    v.block_tables = table_ptrs.data();
    return v;
  }

  AttentionShape shape;
  int64_t block_size;
  DType type;
  int64_t n_blocks = 0;
  int64_t head_stride = 0;
  int64_t block_stride = 0;
  std::vector<std::vector<int32_t>> tables;
  std::vector<const int32_t*> table_ptrs;
  std::vector<double> values;
  std::vector<float> f32;
  std::vector<uint16_t> f16;
};

std::vector<double> reference(const TestCache& cache, const std::vector<Token>& tokens,
                              const std::vector<float>& q) {
  const AttentionShape& s = cache.shape;
  const int64_t hd = s.head_dim;
  const int64_t group = s.n_heads / s.n_kv_heads;
  std::vector<double> out(tokens.size() * s.n_heads * hd, 0.0);
  for (size_t i = 0; i < tokens.size(); ++i) {
    for (int64_t h = 0; h < s.n_heads; ++h) {
      const float* qh = q.data() + (i * s.n_heads + h) * hd;
      const int64_t n = tokens[i].pos + 1;
      std::vector<double> scores(n);
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t p = 0; p < n; ++p) {
        const double* k = cache.values.data() + cache.offset(tokens[i].seq, p, h / group, 0);
        double dot = 0;
        for (int64_t d = 0; d < hd; ++d) dot += double{qh[d]} * k[d];
        scores[p] = dot / std::sqrt(static_cast<double>(hd));
        m = std::max(m, scores[p]);
      }
      double sum = 0;
      for (double& x : scores) sum += (x = std::exp(x - m));
      double* o = out.data() + (i * s.n_heads + h) * hd;
      for (int64_t p = 0; p < n; ++p) {
        const double* v = cache.values.data() + cache.offset(tokens[i].seq, p, h / group, 1);
        for (int64_t d = 0; d < hd; ++d) o[d] += scores[p] / sum * v[d];
      }
    }
  }
  return out;
}

TEST(AttentionTest, MatchesFloat64Reference) {
  std::mt19937 rng(1234);
  int checked = 0;
  for (const Case& c : cases()) {
    for (DType type : {DType::kF32, DType::kF16}) {
      TestCache cache(c.shape, c.block_size, type, 128, rng);
      std::vector<int64_t> length(4, 0);
      for (const Token& t : c.tokens) length[t.seq] = std::max<int64_t>(length[t.seq], t.pos + 1);
      for (int32_t seq = 0; seq < 4; ++seq) cache.fill(seq, length[seq], rng);
      std::vector<int32_t> seq_ids, positions;
      for (const Token& t : c.tokens) {
        seq_ids.push_back(t.seq);
        positions.push_back(t.pos);
      }
      const int64_t width = c.shape.n_heads * c.shape.head_dim;
      std::normal_distribution<float> dist(0.0f, 1.0f);
      std::vector<float> q(c.tokens.size() * width);
      for (float& x : q) x = dist(rng);
      const std::vector<double> want = reference(cache, c.tokens, q);
      double scale = 0;
      for (double x : want) scale = std::max(scale, std::abs(x));

      for (int n_threads : {1, 3}) {
        ThreadPool pool(n_threads);
        auto ws = AttentionWorkspace::Create(c.shape, static_cast<int64_t>(c.tokens.size()), 16,
                                             n_threads);
        ASSERT_TRUE(ws.ok()) << ws.status();
        for (Isa isa : available_isas()) {
          SCOPED_TRACE(c.name + " " + std::string(dtype_info(type)->name) + " threads " +
                       std::to_string(n_threads) + " " + std::string(isa_name(isa)));
          std::vector<float> out(q.size(), -1.0f);
          attention(cache.view(), seq_ids, positions, q.data(), out.data(), *ws, pool, isa);
          double err = 0;
          for (size_t i = 0; i < out.size(); ++i) {
            err = std::max(err, std::abs(out[i] - want[i]));
          }
          // float accumulation over at most 101 positions of unit-scale values.
          EXPECT_LT(err / scale, 2e-5) << "max error " << err << " of " << scale;
          ++checked;
        }
      }
    }
  }
  EXPECT_GT(checked, 60);
}

TEST(AttentionTest, RefusesShapesTheKernelsCannotRun) {
  EXPECT_FALSE(check_attention_shape({8, 8, 60}).ok());   // head_dim not a multiple of 8
  EXPECT_FALSE(check_attention_shape({8, 3, 64}).ok());   // heads not a multiple of KV heads
  EXPECT_FALSE(check_attention_shape({0, 1, 64}).ok());
  EXPECT_TRUE(check_attention_shape({32, 4, 64}).ok());
  EXPECT_FALSE(AttentionWorkspace::Create({8, 8, 60}, 4, 16, 1).ok());
  EXPECT_FALSE(AttentionWorkspace::Create({8, 8, 64}, 0, 16, 1).ok());
}

TEST(AttentionTest, ConvertsToF16LikeTheScalarConversion) {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 100.0f);
  std::vector<float> x(1000);
  for (float& f : x) f = dist(rng);
  x[3] = 65519.0f;  // rounds to the largest half
  x[4] = 1e-6f;     // a subnormal half
  x[5] = -0.0f;
  for (Isa isa : available_isas()) {
    std::vector<uint16_t> got(x.size());
    convert_f32_to_f16(x.data(), got.data(), static_cast<int64_t>(x.size()) - 3, isa);
    for (size_t i = 0; i + 3 < x.size(); ++i) {
      ASSERT_EQ(got[i], f32_to_fp16(x[i])) << isa_name(isa) << " at " << i << ": " << x[i];
    }
  }
}

TEST(AttentionTest, SwiGluMatchesTheScalarFormula) {
  std::mt19937 rng(9);
  std::normal_distribution<float> dist(0.0f, 4.0f);
  std::vector<float> gate(1003), up(gate.size());
  for (float& f : gate) f = dist(rng);
  for (float& f : up) f = dist(rng);
  gate[0] = 0.0f;
  gate[1] = -0.0f;
  gate[2] = 100.0f;   // sigmoid 1
  gate[3] = -100.0f;  // e^100 would overflow a naive exp
  gate[4] = 88.5f;
  gate[5] = -88.5f;
  for (Isa isa : available_isas()) {
    std::vector<float> got = gate;
    // An awkward length: the vector loop and its scalar tail.
    swiglu(got.data(), up.data(), static_cast<int64_t>(gate.size()) - 2, isa);
    for (size_t i = 0; i < gate.size(); ++i) {
      if (i + 2 >= gate.size()) {
        ASSERT_EQ(got[i], gate[i]) << "wrote past n";
        continue;
      }
      const double g = gate[i];
      const double want = g / (1.0 + std::exp(-g)) * up[i];
      ASSERT_NEAR(got[i], want, 1e-6 * std::abs(want) + 1e-30)
          << isa_name(isa) << " at " << i << ": silu(" << g << ") * " << up[i];
    }
  }
}

}  // namespace
}  // namespace tandem::kernels
