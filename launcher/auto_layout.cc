#include "launcher/auto_layout.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "launcher/memory_bandwidth.h"
#include "partition/plan.h"
#include "runtime/gguf/gguf.h"
#include "runtime/model/model_desc.h"

namespace tandem::launcher {
namespace {

constexpr int kMaxStages = 64;

// Rank 0's choice as it travels to the other ranks.
struct LayoutChoice {
  int32_t code = 0;  // absl::StatusCode; 0: the fields below hold the layout
  int32_t tp = 1;
  int32_t pp = 1;
  int32_t n_stages = 0;
  int64_t stage_begin[kMaxStages] = {};
  int64_t stage_end[kMaxStages] = {};
  char message[256] = {};
};
static_assert(std::is_trivially_copyable_v<LayoutChoice>);

// MemTotal of this box, or 0 when /proc/meminfo cannot say.
int64_t memory_total_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  int64_t kib = 0;
  while (in >> key >> kib >> unit) {
    if (key == "MemTotal:") return kib * 1024;
  }
  return 0;
}

// The cluster as the planner sees it: this box's memory for every box, its
// read bandwidth measured now (all cores, and one rank's threads: a CPU rank
// reads only as fast as its threads can), the planner's default compute (it
// ranks the layouts, it does not need to be exact), and the links measured at
// start-up.
partition::ClusterDesc describe_cluster(const Cluster& cluster, int rank_threads) {
  partition::ClusterDesc c;
  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  constexpr size_t kProbeBytes = size_t{128} << 20;
  // One buffer for both measurements: filling it costs more than reading it.
  if (auto probe = ReadProbe::Create(kProbeBytes); probe.ok()) {
    if (const double node = probe->measure(cores, 2); node > 0) {
      c.memory_bandwidth = node;
      const double rank = probe->measure(std::min(rank_threads, cores), 2);
      if (rank > 0) c.rank_memory_bandwidth = std::min(rank, node);
    }
  }
  const int per_box = cluster.ranks_on_this_box();
  c.ranks_per_node = per_box > 0 && cluster.size() % per_box == 0 ? per_box : 1;
  c.nodes = cluster.size() / c.ranks_per_node;
  if (const int64_t total = memory_total_bytes(); total > 0) {
    c.node_memory_bytes = total;
    c.os_reserve_bytes = std::min(c.os_reserve_bytes, total / 4);
  }
  double latency = 0, bandwidth = 0;
  int n = 0;
  for (const transport::LinkMeasurement& m : cluster.links()) {
    if (m.round_trip_us <= 0 || m.bandwidth_gbps <= 0) continue;
    latency += m.round_trip_us / 2 * 1e-6;
    bandwidth += m.bandwidth_gbps * 1e9;
    ++n;
  }
  if (n > 0) {
    // Ranks on one box reach each other through what was measured; across
    // boxes, the measured links are the boxes' link.
    (c.nodes == 1 ? c.local_latency : c.link_latency) = latency / n;
    (c.nodes == 1 ? c.local_bandwidth : c.link_bandwidth) = bandwidth / n;
  }
  return c;
}

absl::StatusOr<LayoutChoice> plan_layout(const Cluster& cluster,
                                         const engine::EngineOptions& options) {
  TANDEM_ASSIGN_OR_RETURN(gguf::File file, gguf::File::Open(options.model_path));
  TANDEM_ASSIGN_OR_RETURN(partition::ModelDesc model,
                          model::model_desc_from_gguf(file, options.kv_type));
  partition::Request request;
  if (options.context_length > 0) request.context = options.context_length;
  else request.context = model.context_length > 0 ? model.context_length : request.context;
  request.batch = options.max_sequences;
  request.prefill_chunk = options.max_batch_tokens;
  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const int rank_threads = options.n_threads > 0
                               ? options.n_threads
                               : std::max(1, cores / std::max(1, cluster.ranks_on_this_box()));
  const partition::ClusterDesc desc = describe_cluster(cluster, rank_threads);
  TANDEM_ASSIGN_OR_RETURN(partition::Plan plan, partition::make_plan(model, desc, request));
  const partition::LayoutEval& chosen = plan.layout();
  if (static_cast<int>(chosen.stages.size()) > kMaxStages) {
    return absl::InvalidArgumentError(absl::StrCat("a plan of ", chosen.stages.size(),
                                                   " stages is more than ", kMaxStages));
  }
  LayoutChoice choice;
  choice.tp = chosen.tp;
  choice.pp = chosen.pp;
  choice.n_stages = static_cast<int32_t>(chosen.stages.size());
  for (size_t s = 0; s < chosen.stages.size(); ++s) {
    choice.stage_begin[s] = chosen.stages[s].begin;
    choice.stage_end[s] = chosen.stages[s].end;
  }
  std::fprintf(stderr,
               "layout: %s, chosen by the planner for %d node(s) x %d rank(s) (memory %.1f GB/s, "
               "%.1f GB/s per rank; link %.1f us, %.2f GB/s): %s\n",
               chosen.name().c_str(), desc.nodes, desc.ranks_per_node, desc.memory_bandwidth / 1e9,
               desc.rank_memory_bandwidth / 1e9,
               (desc.nodes == 1 ? desc.local_latency : desc.link_latency) * 1e6,
               (desc.nodes == 1 ? desc.local_bandwidth : desc.link_bandwidth) / 1e9,
               plan.reason.c_str());
  std::fprintf(stderr, "layout: predicted decode %.1f tokens/s per sequence; `tandem plan` shows "
               "every layout it considered; --tp/--pp choose one yourself\n",
               chosen.cost.decode_step_s > 0 ? 1.0 / chosen.cost.decode_step_s : 0.0);
  return choice;
}

}  // namespace

absl::Status choose_layout(const Cluster& cluster, engine::EngineOptions& options) {
  if (cluster.size() <= 1 || options.tp * options.pp != 1) return absl::OkStatus();
  LayoutChoice choice;
  if (cluster.rank() == 0) {
    absl::StatusOr<LayoutChoice> planned = plan_layout(cluster, options);
    if (planned.ok()) {
      choice = *planned;
    } else {
      choice.code = static_cast<int32_t>(planned.status().code());
      const std::string text = absl::StrCat("choosing a layout: ", planned.status().message());
      std::memcpy(choice.message, text.data(), std::min(text.size(), sizeof choice.message - 1));
    }
  }
  // Ranks run as threads of this process (--transport local) load with these
  // same options; ranks in other processes get rank 0's choice.
  if (cluster.thread_ranks().empty()) {
    TANDEM_RETURN_IF_ERROR(cluster.comm()->broadcast(
        &choice, sizeof choice, 0, transport::deadline_in(options.load_timeout)));
  }
  if (choice.code != 0) {
    choice.message[sizeof choice.message - 1] = '\0';
    return absl::Status(static_cast<absl::StatusCode>(choice.code), choice.message);
  }
  if (choice.tp < 1 || choice.pp < 1 || choice.tp * choice.pp != cluster.size() ||
      choice.n_stages != choice.pp) {
    return absl::InternalError(absl::StrCat("rank 0 chose tp ", choice.tp, " x pp ", choice.pp,
                                            " for ", cluster.size(), " ranks"));
  }
  options.tp = choice.tp;
  options.pp = choice.pp;
  options.stages.clear();
  for (int s = 0; s < choice.n_stages; ++s) {
    options.stages.push_back({choice.stage_begin[s], choice.stage_end[s]});
  }
  return absl::OkStatus();
}

}  // namespace tandem::launcher
