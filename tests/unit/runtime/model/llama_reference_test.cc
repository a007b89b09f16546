// The forward pass against a plain double-precision Llama written here, on
// random-weight models, with batches that mix sequences, prefill chunks and
// decode steps.
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/engine/engine.h"
#include "runtime/kernels/cpu/convert.h"
#include "runtime/model/llama.h"
#include "runtime/testing/test_model.h"

namespace tandem {
namespace {

// A weight in float64, with the type it is stored in.
struct Matrix : std::vector<double> {
  DType type = DType::kF32;
};

struct RefModel {
  model::LlamaConfig c;
  gguf::File* file;
  Matrix get(const std::string& name) const {
    const gguf::TensorInfo* t = file->find_tensor(name);
    EXPECT_NE(t, nullptr) << name;
    std::vector<uint8_t> raw(t->n_bytes);
    EXPECT_TRUE(file->read_tensor(*t, raw.data()).ok());
    std::vector<float> f(t->n_elements());
    kernels::dequantize_row(t->type, raw.data(), f.data(), t->n_elements());
    Matrix m;
    m.assign(f.begin(), f.end());
    m.type = t->type;
    return m;
  }
};

// The activations as the kernels see them: rounded to f16/bf16, or quantized
// to Q8_0 blocks (Q8_0, Q4_0, Q5_0; Q8_1 for Q4_1, the same quants) or Q8_K
// blocks (K-quants), as llama.cpp does.
std::vector<double> activations_for(DType type, const std::vector<double>& x) {
  if (type == DType::kF32) return x;
  std::vector<float> f(x.begin(), x.end()), back(x.size());
  const DType act = kernels::activation_type(type);
  std::vector<uint8_t> q(row_bytes(act, x.size()));
  if (act == DType::kQ8_0 || act == DType::kQ8_1) {
    kernels::quantize_row_q8_0_act(f.data(), reinterpret_cast<BlockQ8_0*>(q.data()), x.size());
    kernels::dequantize_row(DType::kQ8_0, q.data(), back.data(), x.size());
  } else if (act == DType::kQ8_K) {
    kernels::quantize_row_q8_k(f.data(), reinterpret_cast<BlockQ8_K*>(q.data()), x.size());
    kernels::dequantize_row(act, q.data(), back.data(), x.size());
  } else {
    EXPECT_TRUE(kernels::quantize_row(type, f.data(), q.data(), x.size()).ok());
    kernels::dequantize_row(act, q.data(), back.data(), x.size());
  }
  return std::vector<double>(back.begin(), back.end());
}

// y[r] = sum_c w[r * cols + c] * x[c]
std::vector<double> matvec(const Matrix& w, const std::vector<double>& x_in) {
  const std::vector<double> x = activations_for(w.type, x_in);
  const size_t cols = x.size();
  std::vector<double> y(w.size() / cols);
  for (size_t r = 0; r < y.size(); ++r) {
    double s = 0;
    for (size_t c = 0; c < cols; ++c) s += w[r * cols + c] * x[c];
    y[r] = s;
  }
  return y;
}

std::vector<double> rms(const std::vector<double>& x, const Matrix& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double scale = 1.0 / std::sqrt(ss / x.size() + eps);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * scale * w[i];
  return y;
}

void rope(std::vector<double>& v, int64_t n_heads, const model::LlamaConfig& c, int pos,
          const Matrix& freqs) {
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t i = 0; i < c.rope_dim; i += 2) {
      const double factor = freqs.empty() ? 1.0 : freqs[i / 2];
      const double theta = pos * std::pow(c.rope_freq_base, -double(i) / c.rope_dim) / factor;
      double& a = v[h * c.head_dim + i];
      double& b = v[h * c.head_dim + i + 1];
      const double x0 = a, x1 = b;
      a = x0 * std::cos(theta) - x1 * std::sin(theta);
      b = x0 * std::sin(theta) + x1 * std::cos(theta);
    }
  }
}

// Logits after every position of one sequence.
std::vector<std::vector<double>> reference_logits(const RefModel& m, const std::vector<int32_t>& tokens) {
  const auto& c = m.c;
  const Matrix embd = m.get("token_embd.weight");
  const Matrix out = m.file->find_tensor("output.weight") ? m.get("output.weight") : embd;
  const Matrix freqs = m.file->find_tensor("rope_freqs.weight") ? m.get("rope_freqs.weight") : Matrix{};
  std::vector<std::vector<double>> x(tokens.size());
  for (size_t t = 0; t < tokens.size(); ++t) {
    x[t].assign(embd.begin() + tokens[t] * c.dim, embd.begin() + (tokens[t] + 1) * c.dim);
  }
  for (int64_t il = 0; il < c.n_layers; ++il) {
    const std::string b = "blk." + std::to_string(il) + ".";
    const Matrix wq = m.get(b + "attn_q.weight"), wk = m.get(b + "attn_k.weight"),
                 wv = m.get(b + "attn_v.weight"), wo = m.get(b + "attn_output.weight"),
                 an = m.get(b + "attn_norm.weight"), fn = m.get(b + "ffn_norm.weight"),
                 wg = m.get(b + "ffn_gate.weight"), wu = m.get(b + "ffn_up.weight"),
                 wd = m.get(b + "ffn_down.weight");
    std::vector<std::vector<double>> q(tokens.size()), k(tokens.size()), v(tokens.size());
    for (size_t t = 0; t < tokens.size(); ++t) {
      const auto h = rms(x[t], an, c.rms_eps);
      q[t] = matvec(wq, h);
      k[t] = matvec(wk, h);
      v[t] = matvec(wv, h);
      rope(q[t], c.n_heads, c, t, freqs);
      rope(k[t], c.n_kv_heads, c, t, freqs);
    }
    for (size_t t = 0; t < tokens.size(); ++t) {
      std::vector<double> att(c.q_dim(), 0.0);
      for (int64_t h = 0; h < c.n_heads; ++h) {
        const int64_t kvh = h / (c.n_heads / c.n_kv_heads);
        std::vector<double> s(t + 1);
        double mx = -1e300, sum = 0;
        for (size_t p = 0; p <= t; ++p) {
          double d = 0;
          for (int64_t i = 0; i < c.head_dim; ++i) d += q[t][h * c.head_dim + i] * k[p][kvh * c.head_dim + i];
          s[p] = d / std::sqrt(double(c.head_dim));
          mx = std::max(mx, s[p]);
        }
        for (double& e : s) sum += (e = std::exp(e - mx));
        for (size_t p = 0; p <= t; ++p) {
          for (int64_t i = 0; i < c.head_dim; ++i) {
            att[h * c.head_dim + i] += s[p] / sum * v[p][kvh * c.head_dim + i];
          }
        }
      }
      const auto o = matvec(wo, att);
      for (int64_t i = 0; i < c.dim; ++i) x[t][i] += o[i];
      const auto h2 = rms(x[t], fn, c.rms_eps);
      auto g = matvec(wg, h2);
      const auto u = matvec(wu, h2);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      const auto d = matvec(wd, g);
      for (int64_t i = 0; i < c.dim; ++i) x[t][i] += d[i];
    }
  }
  const Matrix on = m.get("output_norm.weight");
  std::vector<std::vector<double>> logits;
  for (auto& xt : x) logits.push_back(matvec(out, rms(xt, on, c.rms_eps)));
  return logits;
}

struct Variant {
  const char* name;
  bool tied;
  bool rope_freqs;
  const char* type = "f32";
  // The reference rounds activations as the kernels do, but an activation
  // that sits within float error of a rounding boundary can round the other
  // way in one of the two (a few of the ~10^4 roundings per run do), moving
  // the logits by about one f16/bf16 ulp or one Q8_0 step. The tolerances
  // allow for a few such flips; F32 has none.
  double tolerance = 2e-4;
  // The reference keeps K and V in double: an f16 cache rounds them (relative
  // 2^-11), which moves the logits here (measured: 3.7e-4).
  DType kv_type = DType::kF32;
};

class ReferenceTest : public ::testing::TestWithParam<Variant> {};

TEST_P(ReferenceTest, MixedBatchesMatchDoublePrecision) {
  const Variant variant = GetParam();
  const std::string path =
      (std::filesystem::temp_directory_path() / (std::string("tandem-ref-") + variant.name + ".gguf")).string();
  testing::TestModelSpec spec;
  spec.shape = "tiny";
  spec.seed = 11;
  spec.tied_embeddings = variant.tied;
  spec.rope_freqs = variant.rope_freqs;
  ASSERT_TRUE(testing::parse_test_model_type(variant.type, spec).ok()) << variant.type;
  ASSERT_TRUE(testing::write_test_model(path, spec).ok());

  auto file = gguf::File::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto config = model::LlamaConfig::FromGguf(*file);
  ASSERT_TRUE(config.ok()) << config.status();
  RefModel ref{*config, &*file};

  const std::vector<int32_t> a = {1, 300, 17, 45, 99, 260, 7, 501, 3};
  const std::vector<int32_t> b = {1, 42, 42, 42, 511, 8};
  const auto ref_a = reference_logits(ref, a);
  const auto ref_b = reference_logits(ref, b);

  engine::EngineOptions options;
  options.model_path = path;
  options.n_threads = 2;
  options.max_sequences = 2;
  options.max_batch_tokens = 16;
  options.context_length = 64;
  options.kv_type = variant.kv_type;
  auto e = engine::Engine::Load(options);
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_TRUE((*e)->open_sequence(0).ok());
  ASSERT_TRUE((*e)->open_sequence(1).ok());

  // Three steps: (a[0..4) + b[0..3)), (a[4..8) + b[3]), (a[8] + b[4], b[5]).
  struct Item { int seq; int pos; };
  const std::vector<std::vector<Item>> steps = {
      {{0, 0}, {1, 0}, {0, 1}, {1, 1}, {0, 2}, {0, 3}, {1, 2}},
      {{0, 4}, {0, 5}, {1, 3}, {0, 6}, {0, 7}},
      {{1, 4}, {0, 8}, {1, 5}}};
  const int64_t n_vocab = config->n_vocab;
  double worst = 0;
  for (const auto& step : steps) {
    std::vector<int32_t> tokens, positions, seqs;
    std::vector<uint8_t> want(step.size(), 1);
    for (const Item& it : step) {
      tokens.push_back(it.seq == 0 ? a[it.pos] : b[it.pos]);
      positions.push_back(it.pos);
      seqs.push_back(it.seq);
    }
    auto logits = (*e)->forward({tokens, positions, seqs, want});
    ASSERT_TRUE(logits.ok()) << logits.status();
    for (size_t i = 0; i < step.size(); ++i) {
      const auto& r = step[i].seq == 0 ? ref_a[step[i].pos] : ref_b[step[i].pos];
      for (int64_t v = 0; v < n_vocab; ++v) {
        worst = std::max(worst, std::abs((*logits)[i * n_vocab + v] - r[v]));
      }
    }
  }
  EXPECT_LT(worst, variant.tolerance) << "largest logit error against the float64 reference";
  std::printf("%s: largest logit error %.3g\n", variant.name, worst);
  std::filesystem::remove(path);
}

INSTANTIATE_TEST_SUITE_P(Variants, ReferenceTest,
                         ::testing::Values(Variant{"untied", false, false},
                                           Variant{"tied", true, false},
                                           Variant{"rope_freqs", false, true},
                                           Variant{"kv_f16", false, false, "f32", 2e-3,
                                                   DType::kF16},
                                           Variant{"f16", false, false, "f16", 3e-3},
                                           Variant{"bf16", true, false, "bf16", 1.5e-2},
                                           Variant{"q8_0", false, true, "q8_0", 3e-2},
                                           Variant{"q4_0", false, false, "q4_0", 3e-2},
                                           // A Q8_K activation step spans 256 values
                                           // instead of 32, so one flipped rounding
                                           // moves the logits more (q4_k_m shows
                                           // 0.02 from one). The kernels themselves
                                           // are checked to 3e-5 in matmul_test. The
                                           // K_M mixes cover Q4_K and Q5_K.
                                           Variant{"q4_1", false, false, "q4_1", 3e-2},
                                           Variant{"q5_0", true, false, "q5_0", 3e-2},
                                           Variant{"q6_k", true, false, "q6_k", 8e-2},
                                           Variant{"q4_k_m", false, false, "q4_k_m", 8e-2},
                                           Variant{"q5_k_m_rope", false, true, "q5_k_m", 8e-2}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(ForwardValidation, BadBatchesAreRefused) {
  const std::string path = (std::filesystem::temp_directory_path() / "tandem-validate.gguf").string();
  ASSERT_TRUE(testing::write_test_model(path, {}).ok());
  engine::EngineOptions options;
  options.model_path = path;
  options.n_threads = 1;
  options.context_length = 32;
  options.max_batch_tokens = 4;
  auto e = engine::Engine::Load(options);
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_TRUE((*e)->open_sequence(0).ok());
  const std::vector<int32_t> zero = {0}, bad_token = {100000}, bad_pos = {32}, closed = {1};
  const std::vector<int32_t> five = {1, 2, 3, 4, 5}, five_pos = {0, 1, 2, 3, 4}, five_seq = {0, 0, 0, 0, 0};
  EXPECT_EQ((*e)->forward({bad_token, zero, zero, {}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*e)->forward({zero, bad_pos, zero, {}}).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*e)->forward({zero, zero, closed, {}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*e)->forward({five, five_pos, five_seq, {}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*e)->forward({zero, zero, zero, {}}).ok());
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace tandem
