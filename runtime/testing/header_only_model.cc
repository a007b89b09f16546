#include "runtime/testing/header_only_model.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/gguf/gguf.h"

namespace tandem::testing {
namespace {

// The hyper-parameters of a published config.json, in GGUF terms.
struct PublishedConfig {
  std::string name;
  std::string arch;  // general.architecture as llama.cpp converts it
  std::string title;
  int64_t n_layers = 0;
  int64_t dim = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn_dim = 0;  // dense FFN width
  int64_t n_vocab = 0;
  int64_t context_length = 0;
  float rope_base = 10000.0f;
  float rms_eps = 1e-5f;
  // Mixture of experts.
  int64_t n_experts = 0;
  int64_t n_experts_used = 0;
  int64_t expert_ffn_dim = 0;
  int64_t moe_layer_step = 1;  // every step-th layer is MoE (llama4's interleave_moe_layer_step)
  bool shared_expert = false;  // llama4: one always-on expert beside the routed ones
  bool qk_norm = false;        // qwen3: RMSNorm of q and k per head
  bool rope_freqs = false;     // llama 3.1: rope_freqs.weight for its long-context RoPE
};

PublishedConfig find_config(std::string_view like, bool* found) {
  *found = true;
  // meta-llama/Llama-3.1-405B config.json: hidden_size 16384,
  // intermediate_size 53248, num_hidden_layers 126, num_attention_heads 128,
  // num_key_value_heads 8, vocab_size 128256, max_position_embeddings 131072,
  // rope_theta 500000, rms_norm_eps 1e-5, rope_scaling llama3 (factor 8),
  // tie_word_embeddings false.
  if (like == "llama-3.1-405b") {
    return {.name = "llama-3.1-405b", .arch = "llama", .title = "Llama 3.1 405B (header only)",
            .n_layers = 126, .dim = 16384, .n_heads = 128, .n_kv_heads = 8, .head_dim = 128,
            .ffn_dim = 53248, .n_vocab = 128256, .context_length = 131072,
            .rope_base = 500000.0f, .rms_eps = 1e-5f, .rope_freqs = true};
  }
  // meta-llama/Llama-4-Maverick-17B-128E text_config: hidden_size 5120,
  // num_hidden_layers 48, num_attention_heads 40, num_key_value_heads 8,
  // head_dim 128, intermediate_size 8192 (per expert), intermediate_size_mlp
  // 16384 (dense layers), num_local_experts 128, num_experts_per_tok 1,
  // interleave_moe_layer_step 2, vocab_size 202048, max_position_embeddings
  // 1048576, rope_theta 500000, rms_norm_eps 1e-5.
  if (like == "llama-4-maverick") {
    return {.name = "llama-4-maverick", .arch = "llama4",
            .title = "Llama 4 Maverick 17B-128E (header only)", .n_layers = 48, .dim = 5120,
            .n_heads = 40, .n_kv_heads = 8, .head_dim = 128, .ffn_dim = 16384,
            .n_vocab = 202048, .context_length = 1048576, .rope_base = 500000.0f,
            .rms_eps = 1e-5f, .n_experts = 128, .n_experts_used = 1, .expert_ffn_dim = 8192,
            .moe_layer_step = 2, .shared_expert = true};
  }
  // Qwen/Qwen3-235B-A22B config.json: hidden_size 4096, num_hidden_layers 94,
  // num_attention_heads 64, num_key_value_heads 4, head_dim 128,
  // intermediate_size 12288, moe_intermediate_size 1536, num_experts 128,
  // num_experts_per_tok 8 (every layer MoE), vocab_size 151936,
  // max_position_embeddings 40960, rope_theta 1000000, rms_norm_eps 1e-6.
  if (like == "qwen3-235b") {
    return {.name = "qwen3-235b", .arch = "qwen3moe", .title = "Qwen3 235B-A22B (header only)",
            .n_layers = 94, .dim = 4096, .n_heads = 64, .n_kv_heads = 4, .head_dim = 128,
            .ffn_dim = 12288, .n_vocab = 151936, .context_length = 40960,
            .rope_base = 1000000.0f, .rms_eps = 1e-6f, .n_experts = 128, .n_experts_used = 8,
            .expert_ffn_dim = 1536, .moe_layer_step = 1, .qk_norm = true};
  }
  *found = false;
  return {};
}

// llama.cpp's Q4_K_M mixture (llama_tensor_get_type in llama-quant.cpp):
// Q4_K everywhere but attn_v and ffn_down in the layers use_more_bits picks
// (the first and last eighth and every third between), and the output head,
// which are Q6_K. Norms, RoPE factors and MoE routers stay f32.
bool use_more_bits(int64_t il, int64_t n) {
  return il < n / 8 || il >= 7 * n / 8 || (il - n / 8) % 3 == 2;
}

}  // namespace

std::vector<std::string> header_only_model_names() {
  return {"llama-3.1-405b", "llama-4-maverick", "qwen3-235b"};
}

absl::Status write_header_only_model(const std::string& path, std::string_view like) {
  bool found = false;
  const PublishedConfig c = find_config(like, &found);
  if (!found) {
    return absl::InvalidArgumentError(absl::StrCat("unknown model '", std::string(like),
                                                   "': want ",
                                                   absl::StrJoin(header_only_model_names(), ", ")));
  }
  using gguf::Value;
  gguf::Writer w;
  auto u32 = [](int64_t v) { return Value::u32(static_cast<uint32_t>(v)); };
  const std::string p = c.arch + ".";
  w.set("general.architecture", Value::str(c.arch));
  w.set("general.name", Value::str(c.title));
  w.set("general.file_type", Value::u32(15));  // LLAMA_FTYPE_MOSTLY_Q4_K_M
  w.set("general.quantization_version", Value::u32(2));
  w.set(p + "context_length", u32(c.context_length));
  w.set(p + "embedding_length", u32(c.dim));
  w.set(p + "block_count", u32(c.n_layers));
  w.set(p + "feed_forward_length", u32(c.ffn_dim));
  w.set(p + "attention.head_count", u32(c.n_heads));
  w.set(p + "attention.head_count_kv", u32(c.n_kv_heads));
  w.set(p + "attention.key_length", u32(c.head_dim));
  w.set(p + "attention.value_length", u32(c.head_dim));
  w.set(p + "rope.dimension_count", u32(c.head_dim));
  w.set(p + "rope.freq_base", Value::f32(c.rope_base));
  w.set(p + "attention.layer_norm_rms_epsilon", Value::f32(c.rms_eps));
  w.set(p + "vocab_size", u32(c.n_vocab));
  if (c.n_experts > 0) {
    w.set(p + "expert_count", u32(c.n_experts));
    w.set(p + "expert_used_count", u32(c.n_experts_used));
    w.set(p + "expert_feed_forward_length", u32(c.expert_ffn_dim));
    if (c.moe_layer_step > 1) w.set(p + "interleave_moe_layer_step", u32(c.moe_layer_step));
  }

  auto tensor = [&](const std::string& name, std::vector<int64_t> dims, DType type) {
    w.add_tensor(name, std::move(dims), type, gguf::Writer::Fill{});
  };
  const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  tensor("token_embd.weight", {c.dim, c.n_vocab}, DType::kQ4_K);  // [n_vocab, dim]
  if (c.rope_freqs) tensor("rope_freqs.weight", {c.head_dim / 2}, DType::kF32);
  for (int64_t il = 0; il < c.n_layers; ++il) {
    const std::string b = absl::StrCat("blk.", il, ".");
    const DType more = use_more_bits(il, c.n_layers) ? DType::kQ6_K : DType::kQ4_K;
    tensor(b + "attn_norm.weight", {c.dim}, DType::kF32);
    tensor(b + "attn_q.weight", {c.dim, q_dim}, DType::kQ4_K);       // [q_dim, dim]
    tensor(b + "attn_k.weight", {c.dim, kv_dim}, DType::kQ4_K);      // [kv_dim, dim]
    tensor(b + "attn_v.weight", {c.dim, kv_dim}, more);              // [kv_dim, dim]
    tensor(b + "attn_output.weight", {q_dim, c.dim}, DType::kQ4_K);  // [dim, q_dim]
    if (c.qk_norm) {
      tensor(b + "attn_q_norm.weight", {c.head_dim}, DType::kF32);
      tensor(b + "attn_k_norm.weight", {c.head_dim}, DType::kF32);
    }
    tensor(b + "ffn_norm.weight", {c.dim}, DType::kF32);
    const bool moe = c.n_experts > 0 && (il + 1) % c.moe_layer_step == 0;
    if (!moe) {
      tensor(b + "ffn_gate.weight", {c.dim, c.ffn_dim}, DType::kQ4_K);  // [ffn, dim]
      tensor(b + "ffn_up.weight", {c.dim, c.ffn_dim}, DType::kQ4_K);    // [ffn, dim]
      tensor(b + "ffn_down.weight", {c.ffn_dim, c.dim}, more);          // [dim, ffn]
      continue;
    }
    const int64_t e = c.n_experts, f = c.expert_ffn_dim;
    tensor(b + "ffn_gate_inp.weight", {c.dim, e}, DType::kF32);           // [experts, dim]
    tensor(b + "ffn_gate_exps.weight", {c.dim, f, e}, DType::kQ4_K);      // [experts][f, dim]
    tensor(b + "ffn_up_exps.weight", {c.dim, f, e}, DType::kQ4_K);        // [experts][f, dim]
    tensor(b + "ffn_down_exps.weight", {f, c.dim, e}, more);              // [experts][dim, f]
    if (c.shared_expert) {
      tensor(b + "ffn_gate_shexp.weight", {c.dim, f}, DType::kQ4_K);  // [f, dim]
      tensor(b + "ffn_up_shexp.weight", {c.dim, f}, DType::kQ4_K);    // [f, dim]
      tensor(b + "ffn_down_shexp.weight", {f, c.dim}, more);          // [dim, f]
    }
  }
  tensor("output_norm.weight", {c.dim}, DType::kF32);
  tensor("output.weight", {c.dim, c.n_vocab}, DType::kQ6_K);  // [n_vocab, dim]
  return w.write_header_only(path);
}

}  // namespace tandem::testing
