#include "partition/cost_model.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"

namespace tandem::partition {

double wire_bytes(const SyncPoint& sync, int64_t tokens) {
  const double payload = static_cast<double>(sync.bytes_per_token) * static_cast<double>(tokens);
  const double p = sync.n_ranks;
  switch (sync.kind) {
    case SyncKind::kAllReduce:
      return 2.0 * (p - 1.0) / p * payload;
    case SyncKind::kGather:
      return (p - 1.0) * payload;
    case SyncKind::kSend:
      return payload;
  }
  return payload;
}

double sync_seconds(const SyncPoint& sync, int64_t tokens, const ClusterDesc& cluster) {
  const double latency = sync.crosses_nodes ? cluster.link_latency : cluster.local_latency;
  const double bandwidth = sync.crosses_nodes ? cluster.link_bandwidth : cluster.local_bandwidth;
  return static_cast<double>(sync.count) * (latency + wire_bytes(sync, tokens) / bandwidth);
}

std::vector<SyncPoint> sync_points(const ModelDims& dims, int tp, std::span<const Range> stages,
                                   const ClusterDesc& cluster) {
  std::vector<SyncPoint> out;
  const int pp = static_cast<int>(stages.size());
  const int64_t hidden = dims.dim * 4;
  auto node = [&](int stage, int tp_rank) { return cluster.node_of(stage * tp + tp_rank); };
  auto tp_spans_nodes = [&](int stage) { return node(stage, 0) != node(stage, tp - 1); };
  if (tp > 1) {
    const int64_t vocab_stride = (dims.n_vocab + tp - 1) / tp;
    for (int s = 0; s < pp; ++s) {
      const std::string stage = absl::StrCat("stage ", s, " ");
      const bool crosses = tp_spans_nodes(s);
      if (s == 0) {
        out.push_back({stage + "embedding all_reduce", SyncKind::kAllReduce, s, 1, hidden, tp,
                       crosses, false});
      }
      out.push_back({stage + "attention output all_reduce", SyncKind::kAllReduce, s,
                     stages[s].size(), hidden, tp, crosses, false});
      out.push_back({stage + "FFN output all_reduce", SyncKind::kAllReduce, s, stages[s].size(),
                     hidden, tp, crosses, false});
      if (s == pp - 1) {
        out.push_back({stage + "logits gather", SyncKind::kGather, s, 1, vocab_stride * 4, tp,
                       crosses, true});
      }
    }
  }
  for (int s = 0; s + 1 < pp; ++s) {
    // Every TP rank sends its own copy, so the link between the stages'
    // nodes carries tp copies when it is shared.
    out.push_back({absl::StrCat("stage ", s, " -> ", s + 1, " hidden state send"), SyncKind::kSend,
                   s, 1, hidden * tp, 2, node(s, 0) != node(s + 1, 0), false});
  }
  if (pp > 1) {
    out.push_back({absl::StrCat("stage ", pp - 1, " -> rank 0 sampled token send"),
                   SyncKind::kSend, pp - 1, 1, 4, 2, node(pp - 1, 0) != node(0, 0), true});
  }
  return out;
}

namespace {

// The memory/compute time of each stage: its slowest node, where the node's
// ranks of that stage share its bandwidth and flops, and no rank reads faster
// than cluster.rank_memory_bandwidth. `work` gives a rank's bytes read and
// flops.
template <typename Work>
std::vector<double> stage_seconds(std::span<const RankWork> ranks, int pp,
                                  const ClusterDesc& cluster, Work work) {
  struct NodeLoad {
    double bytes = 0, flops = 0, largest_rank_bytes = 0;
  };
  std::vector<std::map<int, NodeLoad>> load(static_cast<size_t>(pp));
  for (const RankWork& r : ranks) {
    const auto [bytes, flops] = work(r);
    NodeLoad& node = load[static_cast<size_t>(r.stage)][r.node];
    node.bytes += bytes;
    node.flops += flops;
    node.largest_rank_bytes = std::max(node.largest_rank_bytes, bytes);
  }
  std::vector<double> out(static_cast<size_t>(pp), 0.0);
  for (int s = 0; s < pp; ++s) {
    for (const auto& [node, sum] : load[static_cast<size_t>(s)]) {
      double t = std::max(sum.bytes / cluster.memory_bandwidth, sum.flops / cluster.compute);
      if (cluster.rank_memory_bandwidth > 0) {
        t = std::max(t, sum.largest_rank_bytes / cluster.rank_memory_bandwidth);
      }
      out[static_cast<size_t>(s)] = std::max(out[static_cast<size_t>(s)], t);
    }
  }
  return out;
}

double d(int64_t v) { return static_cast<double>(v); }

}  // namespace

CostEstimate estimate_cost(std::span<const RankWork> ranks, int pp,
                           std::span<const SyncPoint> syncs, const ClusterDesc& cluster,
                           const Request& request) {
  CostEstimate c;
  const double batch = d(request.batch);
  const double context = d(request.context);
  const int64_t chunk = std::min(request.prefill_chunk, request.context);
  const double t = d(chunk);

  c.decode_stage_s = stage_seconds(ranks, pp, cluster, [&](const RankWork& r) {
    return std::pair{d(r.weight_bytes_read) + batch * context * d(r.kv_bytes_per_position),
                     2.0 * batch * (d(r.matmul_macs) + context * d(r.attention_macs_per_position))};
  });
  for (double s : c.decode_stage_s) c.decode_step_s += s;
  for (const SyncPoint& s : syncs) c.decode_sync_s += sync_seconds(s, request.batch, cluster);
  c.decode_step_s += c.decode_sync_s;
  c.decode_tokens_per_s = batch / c.decode_step_s;

  const double half = context / 2.0;
  const std::vector<double> prefill_stage = stage_seconds(ranks, pp, cluster, [&](const RankWork& r) {
    return std::pair{(d(r.weight_bytes_read) + half * d(r.kv_bytes_per_position)) / t +
                         d(r.kv_bytes_per_position),
                     2.0 * (d(r.matmul_macs) + half * d(r.attention_macs_per_position))};
  });
  c.prefill_token_s = *std::max_element(prefill_stage.begin(), prefill_stage.end());
  for (const SyncPoint& s : syncs) {
    if (!s.decode_only) c.prefill_sync_s += sync_seconds(s, chunk, cluster) / t;
  }
  c.prefill_token_s += c.prefill_sync_s;
  c.prefill_tokens_per_s = 1.0 / c.prefill_token_s;
  return c;
}

}  // namespace tandem::partition
