#include "runtime/model/llama.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "runtime/kernels/cpu/convert.h"
#include "runtime/model/layer_ops.h"
#include "runtime/model/llama_workspace.h"

namespace tandem::model {
namespace {

absl::StatusOr<int64_t> get_positive(const gguf::File& file, const std::string& key) {
  TANDEM_ASSIGN_OR_RETURN(uint64_t v, file.get_u64(key));
  if (v == 0 || v > (1ull << 31)) {
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": ", key, " = ", v,
                                                   " is out of range"));
  }
  return static_cast<int64_t>(v);
}

// An optional key: its value, `fallback` when absent, an error when malformed.
template <typename T, typename Getter>
absl::StatusOr<T> get_or(const gguf::File& file, const std::string& key, T fallback,
                         Getter getter) {
  if (file.find(key) == nullptr) return fallback;
  return getter(key);
}

}  // namespace

absl::StatusOr<LlamaConfig> LlamaConfig::FromGguf(const gguf::File& file) {
  TANDEM_ASSIGN_OR_RETURN(std::string arch, file.get_string("general.architecture"));
  if (arch != "llama") {
    return absl::UnimplementedError(
        absl::StrCat(file.path(), ": unsupported architecture '", arch, "' (supported: llama)"));
  }
  const std::string p = "llama.";
  LlamaConfig c;
  TANDEM_ASSIGN_OR_RETURN(c.dim, get_positive(file, p + "embedding_length"));
  TANDEM_ASSIGN_OR_RETURN(c.n_layers, get_positive(file, p + "block_count"));
  TANDEM_ASSIGN_OR_RETURN(c.ffn_dim, get_positive(file, p + "feed_forward_length"));
  TANDEM_ASSIGN_OR_RETURN(c.n_heads, get_positive(file, p + "attention.head_count"));
  c.n_kv_heads = c.n_heads;
  if (file.find(p + "attention.head_count_kv") != nullptr) {
    TANDEM_ASSIGN_OR_RETURN(c.n_kv_heads, get_positive(file, p + "attention.head_count_kv"));
  }
  TANDEM_ASSIGN_OR_RETURN(c.context_length, get_positive(file, p + "context_length"));
  c.head_dim = c.dim / c.n_heads;
  if (file.find(p + "attention.key_length") != nullptr) {
    TANDEM_ASSIGN_OR_RETURN(c.head_dim, get_positive(file, p + "attention.key_length"));
  }
  c.rope_dim = c.head_dim;
  if (file.find(p + "rope.dimension_count") != nullptr) {
    TANDEM_ASSIGN_OR_RETURN(c.rope_dim, get_positive(file, p + "rope.dimension_count"));
  }
  auto f32 = [&](const std::string& key) { return file.get_f32(key); };
  TANDEM_ASSIGN_OR_RETURN(c.rms_eps, file.get_f32(p + "attention.layer_norm_rms_epsilon"));
  TANDEM_ASSIGN_OR_RETURN(c.rope_freq_base,
                          get_or<float>(file, p + "rope.freq_base", 10000.0f, f32));
  TANDEM_ASSIGN_OR_RETURN(
      std::string scaling,
      get_or<std::string>(file, p + "rope.scaling.type", "none",
                          [&](const std::string& key) { return file.get_string(key); }));
  if (scaling == "linear") {
    TANDEM_ASSIGN_OR_RETURN(float factor, file.get_f32(p + "rope.scaling.factor"));
    if (!(factor > 0.0f)) {
      return absl::InvalidArgumentError(absl::StrCat(file.path(), ": rope.scaling.factor ", factor));
    }
    c.rope_freq_scale = 1.0f / factor;
  } else if (scaling != "none") {
    return absl::UnimplementedError(
        absl::StrCat(file.path(), ": rope scaling '", scaling, "' is not supported"));
  }
  const gguf::TensorInfo* embd = file.find_tensor("token_embd.weight");
  if (embd == nullptr || embd->dims.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.path(), ": missing 2-D tensor 'token_embd.weight'"));
  }
  c.n_vocab = embd->dims[1];

  if (c.n_heads % c.n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": ", c.n_heads,
                                                   " heads are not a multiple of ", c.n_kv_heads,
                                                   " KV heads"));
  }
  if (c.head_dim % 2 != 0 || c.rope_dim % 2 != 0 || c.rope_dim > c.head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": head_dim ", c.head_dim,
                                                   " and rope dims ", c.rope_dim,
                                                   " must be even, rope dims <= head_dim"));
  }
  if (!(c.rms_eps > 0.0f) || !(c.rope_freq_base > 0.0f)) {
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": rms epsilon ", c.rms_eps,
                                                   " and rope base ", c.rope_freq_base,
                                                   " must be positive"));
  }
  return c;
}

LlamaModel::~LlamaModel() = default;

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const gguf::File& file,
                                                             const LoadOptions& options) {
  std::unique_ptr<LlamaModel> m(new LlamaModel());
  TANDEM_ASSIGN_OR_RETURN(m->config_, LlamaConfig::FromGguf(file));
  TANDEM_ASSIGN_OR_RETURN(m->store_, WeightStore::Create(file, options));
  const LlamaConfig& c = m->config_;
  WeightStore& s = *m->store_;
  using Kind = WeightStore::Kind;
  LlamaWeights& w = m->weights_;
  TANDEM_ASSIGN_OR_RETURN(w.token_embd, s.load("token_embd.weight", c.dim, c.n_vocab, Kind::kEmbedding));
  TANDEM_ASSIGN_OR_RETURN(w.output_norm, s.load("output_norm.weight", c.dim, 1, Kind::kF32Vector));
  TANDEM_ASSIGN_OR_RETURN(auto output, s.load_optional("output.weight", c.dim, c.n_vocab, Kind::kMatrix));
  w.output = output ? std::move(*output) : w.token_embd;
  TANDEM_ASSIGN_OR_RETURN(auto freqs,
                          s.load_optional("rope_freqs.weight", c.rope_dim / 2, 1, Kind::kF32Vector));
  if (freqs) w.rope_freqs.assign(freqs->f32(), freqs->f32() + c.rope_dim / 2);
  w.layers.resize(c.n_layers);
  for (int64_t il = 0; il < c.n_layers; ++il) {
    LlamaLayer& l = w.layers[il];
    const std::string b = absl::StrCat("blk.", il, ".");
    TANDEM_ASSIGN_OR_RETURN(l.attn_norm, s.load(b + "attn_norm.weight", c.dim, 1, Kind::kF32Vector));
    TANDEM_ASSIGN_OR_RETURN(l.wq, s.load(b + "attn_q.weight", c.dim, c.q_dim(), Kind::kMatrix));
    TANDEM_ASSIGN_OR_RETURN(l.wk, s.load(b + "attn_k.weight", c.dim, c.kv_dim(), Kind::kMatrix));
    TANDEM_ASSIGN_OR_RETURN(l.wv, s.load(b + "attn_v.weight", c.dim, c.kv_dim(), Kind::kMatrix));
    TANDEM_ASSIGN_OR_RETURN(l.wo, s.load(b + "attn_output.weight", c.q_dim(), c.dim, Kind::kMatrix));
    TANDEM_ASSIGN_OR_RETURN(l.ffn_norm, s.load(b + "ffn_norm.weight", c.dim, 1, Kind::kF32Vector));
    TANDEM_ASSIGN_OR_RETURN(l.w_gate, s.load(b + "ffn_gate.weight", c.dim, c.ffn_dim, Kind::kMatrix));
    TANDEM_ASSIGN_OR_RETURN(l.w_up, s.load(b + "ffn_up.weight", c.dim, c.ffn_dim, Kind::kMatrix));
    TANDEM_ASSIGN_OR_RETURN(l.w_down, s.load(b + "ffn_down.weight", c.ffn_dim, c.dim, Kind::kMatrix));
  }
  return m;
}

absl::StatusOr<std::unique_ptr<LlamaWorkspace>> LlamaModel::make_workspace(
    int64_t max_tokens, int64_t max_seq_len, int n_threads) const {
  if (max_tokens <= 0 || max_seq_len <= 0 || n_threads <= 0) {
    return absl::InvalidArgumentError("workspace sizes must be positive");
  }
  const LlamaConfig& c = config_;
  auto ws = std::make_unique<LlamaWorkspace>();
  ws->max_tokens = max_tokens;
  ws->max_seq_len = max_seq_len;
  ws->x.resize(max_tokens * c.dim);
  ws->xb.resize(max_tokens * c.dim);
  ws->q.resize(max_tokens * c.q_dim());
  ws->k.resize(max_tokens * c.kv_dim());
  ws->v.resize(max_tokens * c.kv_dim());
  ws->attn.resize(max_tokens * c.q_dim());
  ws->gate.resize(max_tokens * c.ffn_dim);
  ws->up.resize(max_tokens * c.ffn_dim);
  ws->rope.resize(max_tokens * c.rope_dim);
  ws->scores.resize(static_cast<size_t>(n_threads) * max_seq_len);
  ws->n_threads = n_threads;
  size_t scratch = 0;
  auto plan = [&](const Weight& w) {
    scratch = std::max(scratch, kernels::matmul_scratch_bytes(w.type, w.n_cols, max_tokens));
  };
  for (const LlamaLayer& l : weights_.layers) {
    for (const Weight* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) plan(*w);
  }
  plan(weights_.output);
  ws->scratch.resize(scratch);
  ws->embd_row.resize(c.dim);
  return ws;
}

absl::Status LlamaModel::validate(const Batch& batch, const engine::KvCache& cache,
                                  const LlamaWorkspace& ws) const {
  const int64_t n = batch.size();
  if (n == 0) return absl::InvalidArgumentError("empty batch");
  if (n > ws.max_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch of ", n, " tokens exceeds the planned ", ws.max_tokens));
  }
  if (static_cast<int64_t>(batch.positions.size()) != n ||
      static_cast<int64_t>(batch.seq_ids.size()) != n ||
      (!batch.want_logits.empty() && static_cast<int64_t>(batch.want_logits.size()) != n)) {
    return absl::InvalidArgumentError("batch arrays differ in length");
  }
  for (int64_t i = 0; i < n; ++i) {
    if (batch.tokens[i] < 0 || batch.tokens[i] >= config_.n_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", batch.tokens[i],
                                                     " outside the vocabulary [0, ",
                                                     config_.n_vocab, ")"));
    }
    if (!cache.is_open(batch.seq_ids[i])) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", batch.seq_ids[i], " is not open"));
    }
    if (batch.positions[i] < 0 || batch.positions[i] >= ws.max_seq_len) {
      return absl::OutOfRangeError(absl::StrCat("position ", batch.positions[i],
                                                " outside the context of ", ws.max_seq_len));
    }
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::forward(const Batch& batch, engine::KvCache& cache, LlamaWorkspace& ws,
                                 kernels::ThreadPool& pool, std::span<float> logits) const {
  TANDEM_RETURN_IF_ERROR(validate(batch, cache, ws));
  const LlamaConfig& c = config_;
  const int64_t n = batch.size();
  int64_t n_out = 0;
  for (int64_t i = 0; i < n; ++i) n_out += batch.wants_logits(i) ? 1 : 0;
  if (static_cast<int64_t>(logits.size()) < n_out * c.n_vocab) {
    return absl::InvalidArgumentError("logits buffer too small");
  }
  for (int64_t i = 0; i < n; ++i) {
    TANDEM_RETURN_IF_ERROR(cache.reserve(batch.seq_ids[i], batch.positions[i] + 1));
  }

  const std::span<uint8_t> scratch(ws.scratch);
  auto matmul = [&](const Weight& w, const float* x, int64_t rows, float* y) {
    kernels::matmul(w.matrix(), x, w.n_cols, rows, y, w.n_rows, scratch, pool);
  };
  const Weight& embd = weights_.token_embd;
  const size_t embd_row_bytes = row_bytes(embd.type, c.dim);
  for (int64_t i = 0; i < n; ++i) {
    const auto* row = static_cast<const uint8_t*>(embd.data) + embd_row_bytes * batch.tokens[i];
    kernels::dequantize_row(embd.type, row, ws.x.data() + i * c.dim, c.dim);
    rope_angles(batch.positions[i], c.rope_dim, c.rope_freq_base, c.rope_freq_scale,
                weights_.rope_freqs, ws.rope.data() + i * c.rope_dim);
  }

  for (int64_t il = 0; il < c.n_layers; ++il) {
    const LlamaLayer& l = weights_.layers[il];
    pool.parallel_for(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        rms_norm(ws.x.data() + i * c.dim, l.attn_norm.f32(), c.rms_eps, c.dim, ws.xb.data() + i * c.dim);
      }
    });
    matmul(l.wq, ws.xb.data(), n, ws.q.data());
    matmul(l.wk, ws.xb.data(), n, ws.k.data());
    matmul(l.wv, ws.xb.data(), n, ws.v.data());
    for (int64_t i = 0; i < n; ++i) {
      const float* cs = ws.rope.data() + i * c.rope_dim;
      rope_apply(ws.q.data() + i * c.q_dim(), c.n_heads, c.head_dim, c.rope_dim, cs);
      rope_apply(ws.k.data() + i * c.kv_dim(), c.n_kv_heads, c.head_dim, c.rope_dim, cs);
      for (int64_t h = 0; h < c.n_kv_heads; ++h) {
        const int64_t off = i * c.kv_dim() + h * c.head_dim;
        std::copy_n(ws.k.data() + off, c.head_dim, cache.key(il, batch.seq_ids[i], batch.positions[i], h));
        std::copy_n(ws.v.data() + off, c.head_dim, cache.value(il, batch.seq_ids[i], batch.positions[i], h));
      }
    }
    attention(il, batch, cache, ws, pool);
    matmul(l.wo, ws.attn.data(), n, ws.xb.data());
    add_in_place(ws.x.data(), ws.xb.data(), n * c.dim);

    pool.parallel_for(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        rms_norm(ws.x.data() + i * c.dim, l.ffn_norm.f32(), c.rms_eps, c.dim, ws.xb.data() + i * c.dim);
      }
    });
    matmul(l.w_gate, ws.xb.data(), n, ws.gate.data());
    matmul(l.w_up, ws.xb.data(), n, ws.up.data());
    swiglu(ws.gate.data(), ws.up.data(), n * c.ffn_dim);
    matmul(l.w_down, ws.gate.data(), n, ws.xb.data());
    add_in_place(ws.x.data(), ws.xb.data(), n * c.dim);
  }

  // Final norm of the rows that want logits, packed, then the head.
  int64_t o = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!batch.wants_logits(i)) continue;
    rms_norm(ws.x.data() + i * c.dim, weights_.output_norm.f32(), c.rms_eps, c.dim,
             ws.xb.data() + o * c.dim);
    ++o;
  }
  if (n_out > 0) matmul(weights_.output, ws.xb.data(), n_out, logits.data());
  return absl::OkStatus();
}

}  // namespace tandem::model
