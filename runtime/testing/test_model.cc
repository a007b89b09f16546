#include "runtime/testing/test_model.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "runtime/gguf/gguf.h"
#include "runtime/kernels/cpu/convert.h"
#include "runtime/testing/random.h"
#include "runtime/testing/test_vocab.h"

namespace tandem::testing {
namespace {

constexpr double kWeightStd = 0.02;
constexpr double kNormStd = 0.1;

absl::string_view sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Fills rows [r0, r1) of a [row_len, n_rows] tensor of `type` with
// mean + stddev * N(0, 1), one row at a time through a float buffer.
void fill_rows(DType type, int64_t row_len, int64_t r0, int64_t r1, uint64_t key, double mean,
               double stddev, uint8_t* dst) {
  const size_t rb = row_bytes(type, row_len);
  std::vector<float> row(static_cast<size_t>(row_len));
  for (int64_t r = r0; r < r1; ++r) {
    const uint64_t base = static_cast<uint64_t>(r) * static_cast<uint64_t>(row_len);
    for (int64_t j = 0; j < row_len; ++j) {
      row[static_cast<size_t>(j)] = normal(key, base + static_cast<uint64_t>(j), mean, stddev);
    }
    uint8_t* out = dst + static_cast<size_t>(r) * rb;
    if (type == DType::kF32) {
      std::memcpy(out, row.data(), rb);
    } else {
      const absl::Status s = kernels::quantize_row(type, row.data(), out, row_len);
      TANDEM_CHECK(s.ok());  // the type and row length were validated up front
    }
  }
}

// The writer's fill callback for a random tensor. Large tensors are split
// across threads by rows; every value depends only on its index, so the
// bytes do not depend on the thread count.
gguf::Writer::Fill random_fill(DType type, int64_t row_len, int64_t n_rows, uint64_t key,
                               double mean, double stddev) {
  return [=](std::span<uint8_t> dst) {
    TANDEM_CHECK(dst.size() == row_bytes(type, row_len) * static_cast<size_t>(n_rows));
    constexpr int64_t kMinElementsPerThread = int64_t{1} << 20;
    const int64_t by_size = row_len * n_rows / kMinElementsPerThread;
    const int64_t n_threads =
        std::clamp<int64_t>(std::min<int64_t>(by_size, std::thread::hardware_concurrency()), 1, 16);
    if (n_threads == 1) {
      fill_rows(type, row_len, 0, n_rows, key, mean, stddev, dst.data());
      return;
    }
    std::vector<std::thread> workers;
    for (int64_t t = 0; t < n_threads; ++t) {
      const int64_t r0 = n_rows * t / n_threads;
      const int64_t r1 = n_rows * (t + 1) / n_threads;
      workers.emplace_back(fill_rows, type, row_len, r0, r1, key, mean, stddev, dst.data());
    }
    for (std::thread& w : workers) w.join();
  };
}

// Llama 3.1-style frequency factors: 1 for the fast-rotating (short
// wavelength) pairs, 8 for the slow ones, a linear ramp between.
std::vector<float> rope_freq_factors(int64_t n) {
  std::vector<float> f(static_cast<size_t>(n));
  const double lo = static_cast<double>(n) / 3.0;
  const double hi = 2.0 * static_cast<double>(n) / 3.0;
  for (int64_t i = 0; i < n; ++i) {
    const double x = static_cast<double>(i);
    double v = 1.0;
    if (x >= hi) {
      v = 8.0;
    } else if (x > lo) {
      const double t = (x - lo) / (hi - lo);
      const double ramp = 7.0 * t;
      v = 1.0 + ramp;
    }
    f[static_cast<size_t>(i)] = static_cast<float>(v);
  }
  return f;
}

}  // namespace

absl::StatusOr<TestModelShape> test_model_shape(std::string_view name) {
  if (name == "tiny") return TestModelShape{"tiny", 256, 4, 8, 4, 768, 512, 2048};
  if (name == "small") return TestModelShape{"small", 512, 8, 8, 4, 1536, 4096, 4096};
  if (name == "1b") return TestModelShape{"1b", 2048, 22, 32, 4, 5632, 32000, 2048};
  return absl::InvalidArgumentError(
      absl::StrCat("unknown test model shape '", sv(name), "': want tiny, small or 1b"));
}

absl::StatusOr<uint32_t> file_type_of(DType type, TypeMix mix) {
  if (mix == TypeMix::kKM) {
    if (type == DType::kQ4_K) return 15;  // LLAMA_FTYPE_MOSTLY_Q4_K_M
    if (type == DType::kQ5_K) return 17;  // LLAMA_FTYPE_MOSTLY_Q5_K_M
    return absl::InvalidArgumentError(
        absl::StrCat("the _K_M mix is for q4_k and q5_k, not ", dtype_name(type)));
  }
  switch (type) {
    case DType::kF32:
      return 0;  // LLAMA_FTYPE_ALL_F32
    case DType::kF16:
      return 1;  // LLAMA_FTYPE_MOSTLY_F16
    case DType::kQ4_0:
      return 2;  // LLAMA_FTYPE_MOSTLY_Q4_0
    case DType::kQ8_0:
      return 7;  // LLAMA_FTYPE_MOSTLY_Q8_0
    case DType::kBF16:
      return 32;  // LLAMA_FTYPE_MOSTLY_BF16
    case DType::kQ4_1:
      return 3;  // LLAMA_FTYPE_MOSTLY_Q4_1
    case DType::kQ5_0:
      return 8;  // LLAMA_FTYPE_MOSTLY_Q5_0
    case DType::kQ4_K:
      return 14;  // LLAMA_FTYPE_MOSTLY_Q4_K_S
    case DType::kQ5_K:
      return 16;  // LLAMA_FTYPE_MOSTLY_Q5_K_S
    case DType::kQ6_K:
      return 18;  // LLAMA_FTYPE_MOSTLY_Q6_K
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("test models support f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q4_k, q5_k, "
                       "q6_k, q4_k_m and q5_k_m, not ",
                       dtype_name(type)));
  }
}

absl::Status parse_test_model_type(std::string_view name, TestModelSpec& spec) {
  if (name == "q4_k_m" || name == "q5_k_m") {
    spec.type = name == "q4_k_m" ? DType::kQ4_K : DType::kQ5_K;
    spec.mix = TypeMix::kKM;
    return absl::OkStatus();
  }
  const std::optional<DType> type = dtype_from_name(name);
  if (!type) return absl::InvalidArgumentError(absl::StrCat("unknown type '", sv(name), "'"));
  spec.type = *type;
  spec.mix = TypeMix::kUniform;
  return file_type_of(spec.type).status();
}

DType test_model_tensor_type(const TestModelSpec& spec, std::string_view name, int64_t il,
                             int64_t n_layers) {
  if (spec.mix == TypeMix::kUniform) return spec.type;
  auto ends_with = [&](std::string_view suffix) {
    return name.size() >= suffix.size() && name.substr(name.size() - suffix.size()) == suffix;
  };
  if (name == "output.weight" || (spec.tied_embeddings && name == "token_embd.weight")) {
    return DType::kQ6_K;
  }
  // llama.cpp's use_more_bits(i, n).
  const bool more_bits =
      il >= 0 && (il < n_layers / 8 || il >= 7 * n_layers / 8 || (il - n_layers / 8) % 3 == 2);
  if (more_bits && (ends_with("attn_v.weight") || ends_with("ffn_down.weight"))) {
    return DType::kQ6_K;
  }
  return spec.type;
}

absl::Status write_test_model(const std::string& path, const TestModelSpec& spec) {
  TANDEM_ASSIGN_OR_RETURN(const TestModelShape shape, test_model_shape(spec.shape));
  TANDEM_ASSIGN_OR_RETURN(const uint32_t file_type, file_type_of(spec.type, spec.mix));
  TANDEM_ASSIGN_OR_RETURN(const TestVocab vocab, build_test_vocab(spec.vocab, shape.n_vocab));
  TANDEM_CHECK(static_cast<int64_t>(vocab.tokens.size()) == shape.n_vocab);

  const int64_t dim = shape.dim;
  const int64_t head_dim = shape.head_dim();
  const int64_t q_dim = shape.n_heads * head_dim;
  const int64_t kv_dim = shape.n_kv_heads * head_dim;
  const int64_t ffn = shape.ffn_dim;
  // Every matrix row (dim, q_dim or ffn long) must hold whole quant blocks
  // (of the base type, and of Q6_K in a mix).
  const int64_t block = std::max(dtype_info(spec.type)->block_size,
                                 spec.mix == TypeMix::kKM ? kQK_K : int64_t{1});
  for (int64_t row : {dim, q_dim, ffn}) {
    if (row % block != 0) {
      return absl::InvalidArgumentError(absl::StrCat("shape ", shape.name, ": row length ", row,
                                                     " is not a multiple of the ",
                                                     dtype_name(spec.type), " block size ", block));
    }
  }

  using gguf::Value;
  gguf::Writer w;
  w.set("general.architecture", Value::str("llama"));
  w.set("general.name",
        Value::str(absl::StrCat("tandem-test-", shape.name, "-", spec.vocab, "-",
                                dtype_name(spec.type), spec.mix == TypeMix::kKM ? "_m" : "")));
  w.set("general.file_type", Value::u32(file_type));
  if (dtype_info(spec.type)->block_size > 1) {
    w.set("general.quantization_version", Value::u32(2));
  }
  auto u32 = [](int64_t v) { return Value::u32(static_cast<uint32_t>(v)); };
  w.set("llama.context_length", u32(shape.context_length));
  w.set("llama.embedding_length", u32(dim));
  w.set("llama.block_count", u32(shape.n_layers));
  w.set("llama.feed_forward_length", u32(ffn));
  w.set("llama.attention.head_count", u32(shape.n_heads));
  w.set("llama.attention.head_count_kv", u32(shape.n_kv_heads));
  w.set("llama.rope.dimension_count", u32(head_dim));
  w.set("llama.rope.freq_base", Value::f32(10000.0f));
  w.set("llama.attention.layer_norm_rms_epsilon", Value::f32(1e-5f));
  w.set("llama.vocab_size", u32(shape.n_vocab));
  add_vocab_metadata(vocab, w);

  // Each tensor has its own random stream keyed by its name, so adding or
  // reordering tensors never changes the others.
  int64_t il = -1;  // the layer being written
  auto matrix = [&](const std::string& name, int64_t row_len, int64_t n_rows) {
    const DType type = test_model_tensor_type(spec, name, il, shape.n_layers);
    w.add_tensor(name, {row_len, n_rows}, type,
                 random_fill(type, row_len, n_rows, stream_key(spec.seed, name), 0.0, kWeightStd));
  };
  auto norm = [&](const std::string& name) {
    w.add_tensor(name, {dim}, DType::kF32,
                 random_fill(DType::kF32, dim, 1, stream_key(spec.seed, name), 1.0, kNormStd));
  };

  matrix("token_embd.weight", dim, shape.n_vocab);  // [dim, n_vocab]
  if (spec.rope_freqs) {
    const std::vector<float> factors = rope_freq_factors(head_dim / 2);
    w.add_tensor("rope_freqs.weight", {head_dim / 2}, DType::kF32,
                 [factors](std::span<uint8_t> dst) {
                   TANDEM_CHECK(dst.size() == factors.size() * sizeof(float));
                   std::memcpy(dst.data(), factors.data(), dst.size());
                 });  // [head_dim / 2]
  }
  for (il = 0; il < shape.n_layers; ++il) {
    const std::string p = absl::StrCat("blk.", il, ".");
    norm(p + "attn_norm.weight");                  // [dim]
    matrix(p + "attn_q.weight", dim, q_dim);       // [dim, n_heads * head_dim]
    matrix(p + "attn_k.weight", dim, kv_dim);      // [dim, n_kv_heads * head_dim]
    matrix(p + "attn_v.weight", dim, kv_dim);      // [dim, n_kv_heads * head_dim]
    matrix(p + "attn_output.weight", q_dim, dim);  // [n_heads * head_dim, dim]
    norm(p + "ffn_norm.weight");                   // [dim]
    matrix(p + "ffn_gate.weight", dim, ffn);       // [dim, ffn]
    matrix(p + "ffn_up.weight", dim, ffn);         // [dim, ffn]
    matrix(p + "ffn_down.weight", ffn, dim);       // [ffn, dim]
  }
  il = -1;
  norm("output_norm.weight");                                              // [dim]
  if (!spec.tied_embeddings) matrix("output.weight", dim, shape.n_vocab);  // [dim, n_vocab]
  return w.write(path);
}

}  // namespace tandem::testing
