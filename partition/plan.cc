#include "partition/plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "partition/world.h"

namespace tandem::partition {
namespace {

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

absl::Status check_model(const ModelDesc& m) {
  if (m.n_experts > 0) {
    return absl::UnimplementedError(absl::StrCat(
        "model '", m.name, "' (", m.architecture, ") is a mixture of experts (", m.n_experts,
        " experts, ", m.n_experts_used,
        " used per token); the planner lays out dense models only until MoE support lands"));
  }
  if (m.architecture != "llama") {
    return absl::UnimplementedError(
        absl::StrCat("model '", m.name, "' has architecture '", m.architecture,
                     "'; the planner knows the dense Llama layout only"));
  }
  const ModelDims& d = m.dims;
  if (d.n_layers <= 0 || d.dim <= 0 || d.n_heads <= 0 || d.n_kv_heads <= 0 || d.head_dim <= 0 ||
      d.ffn_dim <= 0 || d.n_vocab <= 0 || d.col_align <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", m.name, "': dimensions must all be positive"));
  }
  // Bounds far above any real model that keep every product below in 64 bits.
  if (d.n_layers > (1 << 16) || d.dim > (1 << 24) || d.n_heads > (1 << 16) ||
      d.n_kv_heads > (1 << 16) || d.head_dim > (1 << 16) || d.ffn_dim > (1 << 24) ||
      d.n_vocab > (int64_t{1} << 31) || d.n_kv_heads * d.head_dim > (1 << 24)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", m.name, "': dimensions beyond any real model (", d.n_layers, " layers, dim ",
        d.dim, ", ", d.n_heads, " heads, ", d.n_kv_heads, " KV heads of ", d.head_dim,
        ", FFN ", d.ffn_dim, ", vocabulary ", d.n_vocab, ")"));
  }
  if (m.kv_element_bytes <= 0 || m.kv_block_positions <= 0 || m.kv_element_bytes > 16 ||
      m.kv_block_positions > (1 << 20)) {
    return absl::InvalidArgumentError("KV element bytes and block positions must be positive");
  }
  for (const TensorDesc& t : m.tensors) {
    if (t.n_rows < 0 || t.n_cols < 0 || t.block_elements <= 0 || t.block_bytes <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", t.name, "' has a negative shape or an empty block"));
    }
  }
  return absl::OkStatus();
}

absl::Status check_cluster(const ClusterDesc& c) {
  auto positive = [](double v) { return std::isfinite(v) && v > 0; };
  if (c.nodes < 1 || c.ranks_per_node < 1 || c.nodes > 4096 || c.ranks_per_node > 256) {
    return absl::InvalidArgumentError(absl::StrCat("cluster of ", c.nodes, " nodes x ",
                                                   c.ranks_per_node,
                                                   " ranks: want 1..4096 nodes, 1..256 ranks"));
  }
  if (c.node_memory_bytes <= 0 || c.os_reserve_bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat("node memory ", c.node_memory_bytes,
                                                   " and OS reserve ", c.os_reserve_bytes,
                                                   " bytes: want memory > 0, reserve >= 0"));
  }
  if (!positive(c.memory_bandwidth) || !positive(c.compute) || !positive(c.link_bandwidth) ||
      !positive(c.local_bandwidth)) {
    return absl::InvalidArgumentError("bandwidths and compute must be positive");
  }
  if (!(c.rank_memory_bandwidth >= 0) || !std::isfinite(c.rank_memory_bandwidth)) {
    return absl::InvalidArgumentError("a rank's memory bandwidth must be finite and not negative");
  }
  if (!(c.link_latency >= 0) || !(c.local_latency >= 0) || !std::isfinite(c.link_latency) ||
      !std::isfinite(c.local_latency)) {
    return absl::InvalidArgumentError("latencies must be finite and not negative");
  }
  return absl::OkStatus();
}

absl::Status check_request(const ModelDesc& m, const Request& r) {
  if (r.context < 1 || r.batch < 1 || r.prefill_chunk < 1 || r.tp < 0 || r.pp < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "context ", r.context, ", batch ", r.batch, ", prefill chunk ", r.prefill_chunk,
        ": want each >= 1"));
  }
  // Every KV byte count below is at most the whole model's cache; make sure
  // that one fits in 64 bits.
  const int64_t per_position =
      m.dims.n_layers * m.dims.n_kv_heads * m.dims.head_dim * 2 * m.kv_element_bytes;
  int64_t positions = 0, bytes = 0;
  if (r.context > (int64_t{1} << 40) || r.batch > (int64_t{1} << 20) ||
      __builtin_mul_overflow(r.context + m.kv_block_positions, r.batch, &positions) ||
      __builtin_mul_overflow(positions, per_position, &bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("a KV cache of context ", r.context, " x ",
                                                   r.batch, " sequences is beyond any machine"));
  }
  return absl::OkStatus();
}

// Bytes of each layer's tensors (blk.N.*) plus its whole KV cache.
std::vector<int64_t> layer_bytes(const ModelDesc& m, const Request& r) {
  std::vector<int64_t> bytes(static_cast<size_t>(m.dims.n_layers), 0);
  for (const TensorDesc& t : m.tensors) {
    if (t.name.rfind("blk.", 0) != 0) continue;
    int64_t il = 0;
    size_t i = 4;
    while (i < t.name.size() && t.name[i] >= '0' && t.name[i] <= '9' && il < m.dims.n_layers) {
      il = il * 10 + (t.name[i++] - '0');
    }
    if (i > 4 && i < t.name.size() && t.name[i] == '.' && il < m.dims.n_layers) {
      bytes[static_cast<size_t>(il)] += t.bytes();
    }
  }
  const int64_t kv = m.dims.n_kv_heads * m.dims.head_dim * 2 * m.kv_element_bytes *
                     kv_positions(m, r);
  for (int64_t& b : bytes) b += kv;
  return bytes;
}

int64_t tensor_bytes(const ModelDesc& m, const char* name) {
  const TensorDesc* t = m.find(name);
  return t == nullptr ? 0 : t->bytes();
}

RankWork rank_work(const ModelDesc& m, const RankShard& s, std::span<const TensorShard> shards,
                   int64_t weights) {
  RankWork w;
  w.weight_bytes_read = weights;
  const bool embedding_is_head = s.has_head && m.tied_output;
  for (const TensorShard& t : shards) {
    const bool lookup_only = t.name == "token_embd.weight" && !embedding_is_head;
    if (lookup_only) {
      const TensorDesc* desc = m.find(t.name);
      if (desc != nullptr) w.weight_bytes_read -= desc->slice_bytes(t.rows, t.cols);
      continue;
    }
    if (t.split != SplitKind::kReplicated) w.matmul_macs += t.rows.size() * t.cols.size();
  }
  w.kv_bytes_per_position = kv_bytes_per_position(m, s);
  w.attention_macs_per_position = 2 * s.q_heads.size() * m.dims.head_dim * s.layers.size();
  return w;
}

std::string node_shortfall(const NodeMemory& n) {
  return absl::StrCat("node ", n.node, " needs ", n.total(), " bytes (", format_gib(n.total()),
                      ": weights ", format_gib(n.weights), " + KV cache ", format_gib(n.kv_cache),
                      " + workspace ", format_gib(n.workspace), " + OS reserve ",
                      format_gib(n.os_reserve), ") but has ", n.available, " (",
                      format_gib(n.available), ")");
}

}  // namespace

std::string LayoutEval::name() const { return absl::StrCat("tp", tp, " x pp", pp); }

std::vector<Range> balance_stages(std::span<const int64_t> layer_bytes, int64_t first_extra,
                                  int64_t last_extra, int pp) {
  const int64_t n = static_cast<int64_t>(layer_bytes.size());
  if (pp <= 1) return {Range{0, n}};
  std::vector<int64_t> prefix(static_cast<size_t>(n) + 1, 0);
  for (int64_t il = 0; il < n; ++il) prefix[il + 1] = prefix[il] + layer_bytes[il];
  const auto stage_bytes = [&](int s, int64_t begin, int64_t end) {
    return prefix[end] - prefix[begin] + (s == 0 ? first_extra : 0) +
           (s == pp - 1 ? last_extra : 0);
  };
  // 1. The smallest cap on a stage's bytes that some split meets. Greedy
  // front-loading (each stage takes layers while it stays under the cap and
  // leaves one for each later stage) meets every cap at or above it.
  auto greedy_meets = [&](int64_t cap) {
    int64_t next = 0;
    for (int s = 0; s + 1 < pp; ++s) {
      int64_t end = next + 1;
      while (end < n - (pp - 1 - s) && stage_bytes(s, next, end + 1) <= cap) ++end;
      if (stage_bytes(s, next, end) > cap) return false;
      next = end;
    }
    return stage_bytes(pp - 1, next, n) <= cap;
  };
  int64_t lo = 0, hi = prefix[n] + first_extra + last_extra;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (greedy_meets(mid)) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  // 2. Among the splits under that cap, the most even one (least sum of
  // squared stage bytes), by dynamic programming over (stage, end layer).
  // Squares of byte counts overflow 64 bits; 128 bits hold them.
  __extension__ using Wide = unsigned __int128;
  const Wide kNone = ~Wide{0};
  std::vector<std::vector<Wide>> best(static_cast<size_t>(pp),
                                      std::vector<Wide>(static_cast<size_t>(n) + 1, kNone));
  for (int s = 0; s < pp; ++s) {
    for (int64_t end = s + 1; end <= n - (pp - 1 - s); ++end) {
      for (int64_t begin = (s == 0 ? 0 : s); begin < end && (s > 0 || begin == 0); ++begin) {
        const int64_t b = stage_bytes(s, begin, end);
        if (b > lo) continue;
        const Wide before = s == 0 ? Wide{0} : best[s - 1][begin];
        if (before == kNone) continue;
        const Wide total = before + static_cast<Wide>(b) * static_cast<Wide>(b);
        if (total < best[s][end]) best[s][end] = total;
      }
    }
  }
  // Walk back; on a tie the later stage takes fewer layers (like even_stages,
  // where earlier stages take the remainder).
  std::vector<Range> stages(static_cast<size_t>(pp));
  int64_t end = n;
  for (int s = pp - 1; s >= 0; --s) {
    int64_t begin = 0;
    if (s > 0) {
      for (int64_t b = end - 1; b >= s; --b) {
        const int64_t bytes = stage_bytes(s, b, end);
        if (bytes > lo || best[s - 1][b] == kNone) continue;
        if (best[s - 1][b] + static_cast<Wide>(bytes) * static_cast<Wide>(bytes) ==
            best[s][end]) {
          begin = b;
          break;
        }
      }
    }
    stages[static_cast<size_t>(s)] = {begin, end};
    end = begin;
  }
  return stages;
}

absl::StatusOr<LayoutEval> evaluate_layout(const ModelDesc& model, const ClusterDesc& cluster,
                                           const Request& request, int tp, int pp) {
  if (absl::Status st = check_model(model); !st.ok()) return st;
  if (absl::Status st = check_cluster(cluster); !st.ok()) return st;
  if (absl::Status st = check_request(model, request); !st.ok()) return st;
  if (tp < 1 || pp < 1 || tp * pp != cluster.world_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tp ", tp, " x pp ", pp, " does not match the cluster's ", cluster.world_size(),
        " ranks (", cluster.nodes, " nodes x ", cluster.ranks_per_node, " ranks per node)"));
  }
  LayoutEval e;
  e.tp = tp;
  e.pp = pp;
  e.tp_within_nodes = World::Create(tp, pp, 0)->tp_groups_within_nodes(cluster.ranks_per_node);
  if (pp > model.dims.n_layers) {
    e.refusal = absl::StrCat("pp ", pp, " exceeds the model's ", model.dims.n_layers, " layers");
    return e;
  }
  const int64_t head_bytes = tensor_bytes(model, "output_norm.weight") +
                             tensor_bytes(model, model.tied_output ? "token_embd.weight"
                                                                   : "output.weight");
  e.stages = balance_stages(layer_bytes(model, request), tensor_bytes(model, "token_embd.weight"),
                            head_bytes, pp);

  std::vector<RankWork> work;
  std::vector<RankShard> shards;
  for (int rank = 0; rank < tp * pp; ++rank) {
    const World world = *World::Create(tp, pp, rank);
    absl::StatusOr<RankShard> shard = make_rank_shard(model.dims, world, e.stages);
    if (!shard.ok()) {
      e.refusal = std::string(shard.status().message());
      e.stages.clear();
      return e;
    }
    const std::vector<TensorShard> tensors = tensor_shards(model.dims, *shard, model.tied_output);
    absl::StatusOr<int64_t> weights = shard_weight_bytes(model, tensors);
    if (!weights.ok()) return weights.status();
    RankMemory mem;
    mem.rank = rank;
    mem.node = cluster.node_of(rank);
    mem.weights = *weights;
    mem.kv_cache = kv_bytes_per_position(model, *shard) * kv_positions(model, request);
    mem.workspace = workspace_bytes(model, *shard, request);
    e.ranks.push_back(mem);
    RankWork w = rank_work(model, *shard, tensors, *weights);
    w.rank = rank;
    w.stage = world.pp_rank();
    w.node = mem.node;
    work.push_back(w);
    shards.push_back(*shard);
  }
  e.shards = std::move(shards);
  e.nodes = node_memory(e.ranks, cluster);

  e.max_kv_positions = std::numeric_limits<int64_t>::max();
  std::vector<std::string> short_nodes;
  for (const NodeMemory& n : e.nodes) {
    if (!n.fits()) short_nodes.push_back(node_shortfall(n));
    int64_t per_position = 0;
    for (int r : n.ranks) per_position += work[static_cast<size_t>(r)].kv_bytes_per_position;
    const int64_t room = n.available - n.os_reserve - n.weights - n.workspace;
    if (per_position > 0) {
      e.max_kv_positions = std::min(e.max_kv_positions, std::max<int64_t>(0, room / per_position));
    }
  }
  e.fits = short_nodes.empty();
  if (!e.fits) e.refusal = absl::StrJoin(short_nodes, "; ");
  e.sync_points = sync_points(model.dims, tp, e.stages, cluster);
  e.cost = estimate_cost(work, pp, e.sync_points, cluster, request);
  return e;
}

absl::StatusOr<Plan> make_plan(const ModelDesc& model, const ClusterDesc& cluster,
                               const Request& request) {
  if (absl::Status st = check_model(model); !st.ok()) return st;
  if (absl::Status st = check_cluster(cluster); !st.ok()) return st;
  if (absl::Status st = check_request(model, request); !st.ok()) return st;
  const int world = cluster.world_size();
  const std::string cluster_text = absl::StrCat(cluster.nodes, " nodes x ", cluster.ranks_per_node,
                                                " ranks per node = ", world, " ranks");
  Plan plan;
  plan.model_name = model.name;
  plan.model_bytes = model.total_bytes();
  plan.cluster = cluster;
  plan.request = request;

  const bool forced = request.tp > 0 || request.pp > 0;
  if (forced) {
    int tp = request.tp, pp = request.pp;
    if (tp == 0) tp = world % pp == 0 ? world / pp : 0;
    if (pp == 0) pp = world % tp == 0 ? world / tp : 0;
    if (tp == 0 || pp == 0 || tp * pp != world) {
      std::vector<std::string> asked;
      if (request.tp > 0) asked.push_back(absl::StrCat("tp ", request.tp));
      if (request.pp > 0) asked.push_back(absl::StrCat("pp ", request.pp));
      return absl::InvalidArgumentError(absl::StrCat("the requested ", absl::StrJoin(asked, " x "),
                                                     " does not fill the cluster's ",
                                                     cluster_text));
    }
    absl::StatusOr<LayoutEval> e = evaluate_layout(model, cluster, request, tp, pp);
    if (!e.ok()) return e.status();
    if (!e->fits) {
      const std::string message =
          absl::StrCat(e->name(), " for '", model.name, "': ", e->refusal);
      if (e->shards.empty()) return absl::InvalidArgumentError(message);
      return absl::ResourceExhaustedError(absl::StrCat(
          message, "; at most ", e->max_kv_positions,
          " positions of KV cache (context x sequences) would fit"));
    }
    plan.layouts.push_back(std::move(*e));
    plan.reason = "the requested layout; it fits";
  } else {
    for (int tp = 1; tp <= world; ++tp) {
      if (world % tp != 0) continue;
      absl::StatusOr<LayoutEval> e = evaluate_layout(model, cluster, request, tp, world / tp);
      if (!e.ok()) return e.status();
      plan.layouts.push_back(std::move(*e));
    }
    // The fastest decode among those that fit; on a tie, TP groups inside a
    // node (their all_reduces stay off the link), then the smaller tp.
    auto better = [](const LayoutEval& a, const LayoutEval& b) {
      const double ta = a.cost.decode_tokens_per_s, tb = b.cost.decode_tokens_per_s;
      if (std::abs(ta - tb) > 1e-9 * std::max(ta, tb)) return ta > tb;
      if (a.tp_within_nodes != b.tp_within_nodes) return a.tp_within_nodes;
      return a.tp < b.tp;
    };
    std::vector<size_t> fitting;
    for (size_t i = 0; i < plan.layouts.size(); ++i) {
      if (plan.layouts[i].fits) fitting.push_back(i);
    }
    if (fitting.empty()) {
      std::vector<std::string> reasons;
      int64_t most_kv = 0;
      for (const LayoutEval& e : plan.layouts) {
        reasons.push_back(absl::StrCat(e.name(), ": ", e.refusal));
        most_kv = std::max(most_kv, e.max_kv_positions);
      }
      return absl::ResourceExhaustedError(absl::StrCat(
          "no layout of ", cluster_text, " fits '", model.name, "' with a context of ",
          request.context, " x ", request.batch, " sequences: ", absl::StrJoin(reasons, "; "),
          most_kv > 0 ? absl::StrCat("; at most ", most_kv,
                                     " positions of KV cache (context x sequences) would fit")
                      : std::string("; not even the weights fit")));
    }
    std::sort(fitting.begin(), fitting.end(),
              [&](size_t a, size_t b) { return better(plan.layouts[a], plan.layouts[b]); });
    plan.chosen = fitting[0];
    const LayoutEval& best = plan.layouts[plan.chosen];
    if (fitting.size() == 1) {
      plan.reason = absl::StrCat("the only layout of ", plan.layouts.size(), " that fits");
    } else {
      const LayoutEval& next = plan.layouts[fitting[1]];
      plan.reason = absl::StrCat(
          "the fastest predicted decode of the ", fitting.size(), " layouts that fit: ",
          fmt("%.2f", best.cost.decode_tokens_per_s), " tokens/s against ",
          fmt("%.2f", next.cost.decode_tokens_per_s), " for ", next.name());
    }
    if (!best.tp_within_nodes) {
      absl::StrAppend(&plan.reason, "; its TP groups span nodes, so every layer's all_reduces "
                                    "cross the link");
    }
  }
  const LayoutEval& chosen = plan.layout();
  for (const RankShard& s : chosen.shards) {
    plan.tensor_shards.push_back(tensor_shards(model.dims, s, model.tied_output));
  }
  return plan;
}

}  // namespace tandem::partition
