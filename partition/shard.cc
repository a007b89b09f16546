#include "partition/shard.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tandem::partition {

Range split_range(int64_t n, int64_t parts, int64_t part, int64_t align) {
  const int64_t groups = n / align;
  const int64_t base = groups / parts;
  const int64_t extra = groups % parts;
  Range r;
  r.begin = (part * base + std::min(part, extra)) * align;
  r.end = r.begin + (base + (part < extra ? 1 : 0)) * align;
  if (part == parts - 1) r.end = n;
  return r;
}

std::vector<Range> even_stages(int64_t n_layers, int pp) {
  std::vector<Range> stages;
  for (int s = 0; s < pp; ++s) stages.push_back(split_range(n_layers, pp, s));
  return stages;
}

namespace {

absl::Status check_dims(const ModelDims& d) {
  if (d.n_layers <= 0 || d.dim <= 0 || d.n_heads <= 0 || d.n_kv_heads <= 0 || d.head_dim <= 0 ||
      d.ffn_dim <= 0 || d.n_vocab <= 0 || d.col_align <= 0) {
    return absl::InvalidArgumentError("model dimensions must all be positive");
  }
  if (d.n_heads % d.n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(d.n_heads, " heads are not a multiple of ",
                                                   d.n_kv_heads, " KV heads"));
  }
  return absl::OkStatus();
}

absl::Status check_stages(std::span<const Range> stages, int64_t n_layers, int pp) {
  if (static_cast<int>(stages.size()) != pp) {
    return absl::InvalidArgumentError(
        absl::StrCat(stages.size(), " stage layer ranges for pp ", pp));
  }
  int64_t next = 0;
  for (const Range& s : stages) {
    if (s.begin != next || s.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "stage layer ranges must be non-empty and consecutive from layer 0; got [", s.begin,
          ", ", s.end, ") where layer ", next, " was due"));
    }
    next = s.end;
  }
  if (next != n_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("stage layer ranges end at ", next, ", the model has ", n_layers, " layers"));
  }
  return absl::OkStatus();
}

// Query and KV heads of TP rank `r`: KV heads split when tp divides them,
// replicated (each rank's query heads inside one KV group) when they divide tp.
absl::Status split_heads(const ModelDims& d, int tp, int r, RankShard& s) {
  const int64_t group = d.n_heads / d.n_kv_heads;
  if (d.n_kv_heads % tp == 0) {
    s.kv_heads = split_range(d.n_kv_heads, tp, r);
    s.q_heads = {s.kv_heads.begin * group, s.kv_heads.end * group};
  } else if (tp % d.n_kv_heads == 0 && d.n_heads % tp == 0) {
    s.q_heads = split_range(d.n_heads, tp, r);
    const int64_t kv = s.q_heads.begin / group;
    s.kv_heads = {kv, kv + 1};
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "tp ", tp, " cannot split ", d.n_heads, " heads with ", d.n_kv_heads,
        " KV heads: tp must divide the KV heads, or the KV heads must divide tp and tp the heads"));
  }
  if ((s.q_heads.begin * d.head_dim) % d.col_align != 0 ||
      (s.q_heads.size() * d.head_dim) % d.col_align != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tp ", tp, " gives rank ", r, " ", s.q_heads.size(), " heads of ", d.head_dim,
        " dims, which is not a whole number of ", d.col_align, "-column quantization blocks"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RankShard> make_rank_shard(const ModelDims& d, const World& world,
                                          std::span<const Range> stages) {
  if (auto st = check_dims(d); !st.ok()) return st;
  const int tp = world.tp();
  std::vector<Range> even;
  if (stages.empty()) {
    if (world.pp() > d.n_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("pp ", world.pp(), " exceeds the model's ", d.n_layers, " layers"));
    }
    even = even_stages(d.n_layers, world.pp());
    stages = even;
  }
  if (auto st = check_stages(stages, d.n_layers, world.pp()); !st.ok()) return st;

  RankShard s;
  s.layers = stages[world.pp_rank()];
  s.has_embedding = world.is_first_stage();
  s.has_head = world.is_last_stage();
  if (auto st = split_heads(d, tp, world.tp_rank(), s); !st.ok()) return st;
  if (d.ffn_dim % d.col_align != 0 || d.ffn_dim / d.col_align < tp) {
    return absl::InvalidArgumentError(absl::StrCat("tp ", tp, " cannot split the FFN of ",
                                                   d.ffn_dim, " into whole ", d.col_align,
                                                   "-column quantization blocks"));
  }
  s.ffn = split_range(d.ffn_dim, tp, world.tp_rank(), d.col_align);
  s.vocab_stride = (d.n_vocab + tp - 1) / tp;
  s.vocab = {std::min(d.n_vocab, world.tp_rank() * s.vocab_stride),
             std::min(d.n_vocab, (world.tp_rank() + 1) * s.vocab_stride)};
  if (s.vocab.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tp ", tp, " leaves rank ", world.tp_rank(), " none of ", d.n_vocab,
                     " vocabulary rows"));
  }
  return s;
}

std::vector<TensorShard> tensor_shards(const ModelDims& d, const RankShard& s, bool tied_output) {
  std::vector<TensorShard> out;
  const Range all_dim{0, d.dim};
  const Range one{0, 1};
  auto add = [&](std::string name, SplitKind split, Range rows, Range cols, int64_t n_rows,
                 int64_t n_cols) {
    out.push_back({std::move(name), split, rows, cols, n_rows, n_cols});
  };
  if (s.has_embedding || (s.has_head && tied_output)) {
    add("token_embd.weight", SplitKind::kVocabParallel, s.vocab, all_dim, d.n_vocab, d.dim);
  }
  if (s.has_head) {
    add("output_norm.weight", SplitKind::kReplicated, one, all_dim, 1, d.dim);
    if (!tied_output) {
      add("output.weight", SplitKind::kVocabParallel, s.vocab, all_dim, d.n_vocab, d.dim);
    }
  }
  const int64_t q_dim = d.n_heads * d.head_dim;
  const int64_t kv_dim = d.n_kv_heads * d.head_dim;
  const Range q_rows{s.q_heads.begin * d.head_dim, s.q_heads.end * d.head_dim};
  const Range kv_rows{s.kv_heads.begin * d.head_dim, s.kv_heads.end * d.head_dim};
  for (int64_t il = s.layers.begin; il < s.layers.end; ++il) {
    const std::string b = absl::StrCat("blk.", il, ".");
    add(b + "attn_norm.weight", SplitKind::kReplicated, one, all_dim, 1, d.dim);
    add(b + "attn_q.weight", SplitKind::kColumnParallel, q_rows, all_dim, q_dim, d.dim);
    add(b + "attn_k.weight", SplitKind::kColumnParallel, kv_rows, all_dim, kv_dim, d.dim);
    add(b + "attn_v.weight", SplitKind::kColumnParallel, kv_rows, all_dim, kv_dim, d.dim);
    add(b + "attn_output.weight", SplitKind::kRowParallel, all_dim, q_rows, d.dim, q_dim);
    add(b + "ffn_norm.weight", SplitKind::kReplicated, one, all_dim, 1, d.dim);
    add(b + "ffn_gate.weight", SplitKind::kColumnParallel, s.ffn, all_dim, d.ffn_dim, d.dim);
    add(b + "ffn_up.weight", SplitKind::kColumnParallel, s.ffn, all_dim, d.ffn_dim, d.dim);
    add(b + "ffn_down.weight", SplitKind::kRowParallel, all_dim, s.ffn, d.dim, d.ffn_dim);
  }
  return out;
}

}  // namespace tandem::partition
