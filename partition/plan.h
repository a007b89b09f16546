// The plan: which TP x PP layout serves a model on a cluster, what every rank
// and node holds, whether it fits, and how fast it should run, decided from
// the model's header alone, before anything is loaded.
//
// make_plan enumerates every layout tp x pp = nodes x ranks_per_node, and for
// each: balances the pipeline stages by bytes (the embedding on the first
// stage, the head on the last), slices every tensor rank by rank
// (tensor_shards), adds up each node's memory (weights, KV cache for context x
// sequences, workspace, OS reserve), lists the sync points and predicts prefill
// and decode speed. Layouts that cannot split the model or do not fit keep
// their reason, with the numbers. The fastest predicted decode among those
// that fit wins.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "partition/cost_model.h"
#include "partition/memory_budget.h"
#include "partition/model_desc.h"
#include "partition/shard.h"

namespace tandem::partition {

// One candidate layout, evaluated.
struct LayoutEval {
  int tp = 1;
  int pp = 1;
  bool tp_within_nodes = true;  // every TP group on one node (World::tp_groups_within_nodes)
  // False when the layout cannot split the model or does not fit; `refusal`
  // says why, with the numbers.
  bool fits = false;
  std::string refusal;
  std::vector<Range> stages;       // layer range of each stage
  std::vector<RankShard> shards;   // per rank; empty when the model does not split
  std::vector<RankMemory> ranks;   // per rank
  std::vector<NodeMemory> nodes;   // per node
  std::vector<SyncPoint> sync_points;
  CostEstimate cost;
  // Positions of KV cache (context x sequences, summed) that fit on every node
  // beside the weights, workspace and reserve; 0 when not even those fit.
  int64_t max_kv_positions = 0;

  std::string name() const;  // "tp2 x pp1"
};

struct Plan {
  std::string model_name;
  int64_t model_bytes = 0;
  ClusterDesc cluster;
  Request request;
  std::vector<LayoutEval> layouts;  // every layout considered, by ascending tp
  size_t chosen = 0;                // index into layouts
  std::string reason;               // why that one
  // The chosen layout's tensors, rank by rank.
  std::vector<std::vector<TensorShard>> tensor_shards;

  const LayoutEval& layout() const { return layouts[chosen]; }
};

// Layer ranges of `pp` stages that minimize the largest stage's bytes, where
// stage bytes are its layers' plus `first_extra` on the first stage and
// `last_extra` on the last; among equal maxima, earlier stages take more
// layers. Every stage gets at least one layer (pp <= layer_bytes.size()).
std::vector<Range> balance_stages(std::span<const int64_t> layer_bytes, int64_t first_extra,
                                  int64_t last_extra, int pp);

// Evaluates one layout. INVALID_ARGUMENT for a bad cluster or request, or a
// model whose tensors do not match its dimensions; UNIMPLEMENTED for a model
// the planner cannot lay out (mixture of experts, not the Llama layout). A
// layout that cannot split the model or does not fit is not an error: it is
// returned with fits = false and its refusal.
absl::StatusOr<LayoutEval> evaluate_layout(const ModelDesc& model, const ClusterDesc& cluster,
                                           const Request& request, int tp, int pp);

// The plan. With request.tp / request.pp set only that layout is considered
// (the other is derived from the cluster's size when 0); it is refused with
// its numbers: INVALID_ARGUMENT when it cannot split the model or does not
// match the cluster, RESOURCE_EXHAUSTED when a node's memory is short. When no
// layout fits, RESOURCE_EXHAUSTED lists every layout's reason.
absl::StatusOr<Plan> make_plan(const ModelDesc& model, const ClusterDesc& cluster,
                               const Request& request);

}  // namespace tandem::partition
