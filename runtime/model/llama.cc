#include "runtime/model/llama.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/container/flat_hash_map.h"
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

partition::ModelDims model_dims(const LlamaConfig& c, const gguf::File& file) {
  partition::ModelDims d{.n_layers = c.n_layers, .dim = c.dim, .n_heads = c.n_heads,
                         .n_kv_heads = c.n_kv_heads, .head_dim = c.head_dim,
                         .ffn_dim = c.ffn_dim, .n_vocab = c.n_vocab, .col_align = 1};
  for (const gguf::TensorInfo& t : file.tensors()) {
    if (auto info = dtype_info(t.type)) d.col_align = std::max(d.col_align, info->block_size);
  }
  return d;
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const gguf::File& file,
                                                             const LoadOptions& options) {
  TANDEM_ASSIGN_OR_RETURN(LlamaConfig c, LlamaConfig::FromGguf(file));
  TANDEM_ASSIGN_OR_RETURN(partition::World one, partition::World::Create(1, 1, 0));
  TANDEM_ASSIGN_OR_RETURN(partition::RankShard whole,
                          partition::make_rank_shard(model_dims(c, file), one));
  return Load(file, options, whole);
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const gguf::File& file,
                                                             const LoadOptions& options,
                                                             const partition::RankShard& shard) {
  std::unique_ptr<LlamaModel> m(new LlamaModel());
  TANDEM_ASSIGN_OR_RETURN(m->config_, LlamaConfig::FromGguf(file));
  const LlamaConfig& c = m->config_;
  const partition::ModelDims dims = model_dims(c, file);
  m->shard_ = shard;
  LlamaConfig& local = m->local_;
  local = c;
  local.n_layers = shard.layers.size();
  local.n_heads = shard.q_heads.size();
  local.n_kv_heads = shard.kv_heads.size();
  local.ffn_dim = shard.ffn.size();
  local.n_vocab = shard.vocab.size();

  // Every tensor is loaded with the slice that partition assigns it, so the
  // memory a plan budgets is the memory loaded.
  const bool tied = file.find_tensor("output.weight") == nullptr;
  absl::flat_hash_map<std::string, Slice> slices;
  for (const partition::TensorShard& t : partition::tensor_shards(dims, shard, tied)) {
    slices[t.name] = Slice{t.rows, t.cols};
  }
  TANDEM_ASSIGN_OR_RETURN(m->store_, WeightStore::Create(file, options));
  WeightStore& s = *m->store_;
  using Kind = WeightStore::Kind;
  auto load = [&](const std::string& name, int64_t n_cols, int64_t n_rows, Kind kind) {
    auto it = slices.find(name);
    TANDEM_CHECK(it != slices.end());
    return s.load(name, n_cols, n_rows, kind, it->second);
  };
  LlamaWeights& w = m->weights_;
  if (shard.has_embedding || (shard.has_head && tied)) {
    TANDEM_ASSIGN_OR_RETURN(w.token_embd, load("token_embd.weight", c.dim, c.n_vocab, Kind::kEmbedding));
  }
  if (shard.has_head) {
    TANDEM_ASSIGN_OR_RETURN(w.output_norm, load("output_norm.weight", c.dim, 1, Kind::kF32Vector));
    if (tied) {
      w.output = w.token_embd;
    } else {
      TANDEM_ASSIGN_OR_RETURN(w.output, load("output.weight", c.dim, c.n_vocab, Kind::kMatrix));
    }
  }
  TANDEM_ASSIGN_OR_RETURN(auto freqs,
                          s.load_optional("rope_freqs.weight", c.rope_dim / 2, 1, Kind::kF32Vector));
  if (freqs) w.rope_freqs.assign(freqs->f32(), freqs->f32() + c.rope_dim / 2);
  w.layers.resize(local.n_layers);
  for (int64_t il = shard.layers.begin; il < shard.layers.end; ++il) {
    LlamaLayer& l = w.layers[il - shard.layers.begin];
    const std::string b = absl::StrCat("blk.", il, ".");
    TANDEM_ASSIGN_OR_RETURN(l.attn_norm, load(b + "attn_norm.weight", c.dim, 1, Kind::kF32Vector));
    TANDEM_ASSIGN_OR_RETURN(l.wq, load(b + "attn_q.weight", c.dim, c.q_dim(), Kind::kMatrix));
    TANDEM_ASSIGN_OR_RETURN(l.wk, load(b + "attn_k.weight", c.dim, c.kv_dim(), Kind::kMatrix));
    TANDEM_ASSIGN_OR_RETURN(l.wv, load(b + "attn_v.weight", c.dim, c.kv_dim(), Kind::kMatrix));
    TANDEM_ASSIGN_OR_RETURN(l.wo, load(b + "attn_output.weight", c.q_dim(), c.dim, Kind::kMatrix));
    TANDEM_ASSIGN_OR_RETURN(l.ffn_norm, load(b + "ffn_norm.weight", c.dim, 1, Kind::kF32Vector));
    TANDEM_ASSIGN_OR_RETURN(l.w_gate, load(b + "ffn_gate.weight", c.dim, c.ffn_dim, Kind::kMatrix));
    TANDEM_ASSIGN_OR_RETURN(l.w_up, load(b + "ffn_up.weight", c.dim, c.ffn_dim, Kind::kMatrix));
    TANDEM_ASSIGN_OR_RETURN(l.w_down, load(b + "ffn_down.weight", c.ffn_dim, c.dim, Kind::kMatrix));
  }
  s.release_pack_pool();
  return m;
}

absl::StatusOr<std::unique_ptr<LlamaWorkspace>> LlamaModel::make_workspace(
    int64_t max_tokens, int64_t max_seq_len, int n_threads, int64_t kv_block_size) const {
  if (max_tokens <= 0 || max_seq_len <= 0 || n_threads <= 0) {
    return absl::InvalidArgumentError("workspace sizes must be positive");
  }
  const LlamaConfig& c = local_;
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
  TANDEM_ASSIGN_OR_RETURN(
      ws->attention,
      kernels::AttentionWorkspace::Create({c.n_heads, c.n_kv_heads, c.head_dim}, max_tokens,
                                          kv_block_size, n_threads));
  ws->n_threads = n_threads;
  size_t scratch = 0;
  auto plan = [&](const Weight& w) {
    scratch = std::max(scratch, kernels::matmul_scratch_bytes(w.type, w.n_cols, max_tokens));
  };
  for (const LlamaLayer& l : weights_.layers) {
    for (const Weight* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) plan(*w);
  }
  if (shard_.has_head) {
    plan(weights_.output);
    ws->logits_local.resize(max_tokens * shard_.vocab_stride);
    const int64_t tp = (config_.n_vocab + shard_.vocab_stride - 1) / shard_.vocab_stride;
    if (tp > 1) ws->gathered.resize(tp * max_tokens * shard_.vocab_stride);
  }
  ws->scratch.resize(scratch);
  ws->embd_row.resize(c.dim);
  ws->send_x.resize(max_tokens * c.dim);
  ws->sends.reserve(max_tokens);
  ws->no_logits.assign(max_tokens, 0);
  return ws;
}

}  // namespace tandem::model
