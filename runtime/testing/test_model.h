// Random-weight Llama models in GGUF, for tests, demos and benchmarks: a file
// that the engine, the tokenizers and llama.cpp all accept, generated from a
// seed in seconds instead of downloaded. Weights are N(0, 0.02), norms
// 1 + N(0, 0.1), both from the counter-based generator in random.h, so the
// same spec gives the same bytes everywhere. Each tensor is produced inside
// the writer's fill callback: even the 1b shape in f32 (4.4 GB) never sits
// in memory.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/tensor/dtype.h"

namespace tandem::testing {

struct TestModelShape {
  std::string name;
  int64_t dim = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t ffn_dim = 0;
  int64_t n_vocab = 0;
  int64_t context_length = 0;

  int64_t head_dim() const { return dim / n_heads; }
};

// "tiny" (256 wide, 4 layers, vocab 512), "small" (512, 8 layers, vocab 4096)
// or "1b" (TinyLlama 1.1B: 2048, 22 layers, 32 heads, 4 kv heads, vocab 32000).
absl::StatusOr<TestModelShape> test_model_shape(std::string_view name);

// How the types of the matrices are chosen.
enum class TypeMix {
  kUniform,  // every matrix and token_embd has TestModelSpec::type
  // llama.cpp's Q4_K_M / Q5_K_M recipes (llama_tensor_get_type in
  // src/llama-quant.cpp): `type` (Q4_K / Q5_K) everywhere except Q6_K for
  // output.weight (token_embd.weight when the embedding is tied) and for
  // attn_v and ffn_down in the layers where use_more_bits(il, n_layers)
  // holds: the first and last eighth, and every third layer between.
  kKM,
};

struct TestModelSpec {
  std::string shape = "tiny";
  // Matrices and token_embd: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q4_k,
  // q5_k or q6_k (the base type under TypeMix::kKM).
  DType type = DType::kF32;
  TypeMix mix = TypeMix::kUniform;
  std::string vocab = "spm";  // "spm" (Llama 2 style) or "bpe" (Llama 3 style)
  uint64_t seed = 1;
  bool tied_embeddings = false;  // no output.weight: the head reuses token_embd
  bool rope_freqs = false;       // add Llama 3.1-style rope_freqs.weight
};

// Writes the model to `path`. InvalidArgument for an unknown shape or vocab
// or an unsupported type; the writer's error when the file cannot be written.
absl::Status write_test_model(const std::string& path, const TestModelSpec& spec);

// llama.cpp's general.file_type (llama_ftype) for a model whose matrices are
// `type` (mixed as `mix`). Uniform Q4_K and Q5_K models are given the _S file
// types, the nearest llama.cpp has.
absl::StatusOr<uint32_t> file_type_of(DType type, TypeMix mix = TypeMix::kUniform);

// Parses a --type of make-test-model: a type name, or "q4_k_m" / "q5_k_m".
absl::Status parse_test_model_type(std::string_view name, TestModelSpec& spec);

// The type of tensor `name` (layer il of n_layers; -1 outside the layers).
DType test_model_tensor_type(const TestModelSpec& spec, std::string_view name, int64_t il,
                             int64_t n_layers);

}  // namespace tandem::testing
