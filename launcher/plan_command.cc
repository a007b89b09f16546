// tandem plan: which TP x PP layout to run a model with on a cluster, what
// each node holds, whether it fits and how fast it should go, from the GGUF
// header alone (a header-only file is enough). The defaults describe two
// DGX Sparks, one rank each.
#include <cstdio>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "launcher/commands.h"
#include "launcher/kv_type_flag.h"
#include "launcher/units.h"
#include "nlohmann/json.hpp"
#include "partition/plan.h"
#include "runtime/gguf/gguf.h"
#include "runtime/model/model_desc.h"

namespace tandem::launcher {
namespace {

struct PlanFlags {
  std::string model;
  int nodes = 2;
  int ranks_per_node = 1;
  std::string node_memory = "128GiB";
  std::string os_reserve = "8GiB";
  std::string mem_bw = "273GB/s";
  std::string rank_mem_bw;  // empty: a rank may use the whole box's bandwidth
  std::string compute = "31TFLOP/s";
  std::string link = "200Gb/s";
  std::string link_latency = "30us";
  int64_t context = 32768;
  int64_t batch = 8;
  int64_t prefill_chunk = 512;
  int tp = 0;
  int pp = 0;
  bool json = false;
  DType kv_type = DType::kF16;
};

absl::StatusOr<partition::ClusterDesc> cluster_from(const PlanFlags& f) {
  partition::ClusterDesc c;
  c.nodes = f.nodes;
  c.ranks_per_node = f.ranks_per_node;
  TANDEM_ASSIGN_OR_RETURN(c.node_memory_bytes, parse_bytes("--node-memory", f.node_memory));
  TANDEM_ASSIGN_OR_RETURN(c.os_reserve_bytes, parse_bytes("--os-reserve", f.os_reserve));
  TANDEM_ASSIGN_OR_RETURN(c.memory_bandwidth, parse_bandwidth("--mem-bw", f.mem_bw));
  if (!f.rank_mem_bw.empty()) {
    TANDEM_ASSIGN_OR_RETURN(c.rank_memory_bandwidth,
                            parse_bandwidth("--rank-mem-bw", f.rank_mem_bw));
  }
  TANDEM_ASSIGN_OR_RETURN(c.compute, parse_flops("--compute", f.compute));
  TANDEM_ASSIGN_OR_RETURN(c.link_bandwidth, parse_bandwidth("--link", f.link));
  TANDEM_ASSIGN_OR_RETURN(c.link_latency, parse_duration("--link-latency", f.link_latency));
  // Ranks of one node exchange through shared memory: a copy in and a copy
  // out on both ranks share the node's memory bandwidth.
  c.local_bandwidth = c.memory_bandwidth / 4;
  if (c.node_memory_bytes == 0) {
    return absl::InvalidArgumentError("--node-memory must be more than zero");
  }
  return c;
}

std::string gib(int64_t bytes) { return partition::format_gib(bytes); }

std::string rate(double per_s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), per_s >= 100 ? "%.0f" : per_s >= 10 ? "%.1f" : "%.2f", per_s);
  return buf;
}

std::string seconds(double s) {
  char buf[32];
  if (s >= 1) {
    std::snprintf(buf, sizeof(buf), "%.2f s", s);
  } else if (s >= 1e-3) {
    std::snprintf(buf, sizeof(buf), "%.2f ms", s * 1e3);
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f us", s * 1e6);
  }
  return buf;
}

int64_t max_node_total(const partition::LayoutEval& e) {
  int64_t worst = 0;
  for (const partition::NodeMemory& n : e.nodes) worst = std::max(worst, n.total());
  return worst;
}

void print_text(const partition::Plan& plan, const partition::ModelDesc& model) {
  const partition::ClusterDesc& c = plan.cluster;
  const partition::Request& r = plan.request;
  std::printf("model: %s (%s), %d layers, weights %.1f GB (%s)\n", model.name.c_str(),
              model.architecture.c_str(), static_cast<int>(model.dims.n_layers),
              plan.model_bytes / 1e9, gib(plan.model_bytes).c_str());
  std::printf("cluster: %d nodes x %d ranks; per node %s (%s reserved for the OS), "
              "memory %.0f GB/s, compute %.1f TFLOP/s; link %.1f GB/s, %s\n",
              c.nodes, c.ranks_per_node, gib(c.node_memory_bytes).c_str(),
              gib(c.os_reserve_bytes).c_str(), c.memory_bandwidth / 1e9, c.compute / 1e12,
              c.link_bandwidth / 1e9, seconds(c.link_latency).c_str());
  std::printf("request: context %lld x %lld sequences, prefill chunks of %lld tokens\n\n",
              static_cast<long long>(r.context), static_cast<long long>(r.batch),
              static_cast<long long>(r.prefill_chunk));

  const partition::LayoutEval& e = plan.layout();
  std::printf("chosen: %s (%s)\n", e.name().c_str(), plan.reason.c_str());
  for (size_t s = 0; s < e.stages.size(); ++s) {
    std::printf("  stage %zu: layers %lld-%lld%s%s\n", s,
                static_cast<long long>(e.stages[s].begin),
                static_cast<long long>(e.stages[s].end - 1), s == 0 ? ", embedding" : "",
                s + 1 == e.stages.size() ? ", output head" : "");
  }
  for (const partition::NodeMemory& n : e.nodes) {
    std::vector<std::string> ranks;
    for (int rank : n.ranks) ranks.push_back(absl::StrCat(rank));
    std::printf("  node %d (rank %s): weights %s + KV cache %s + workspace %s + OS reserve %s "
                "= %s of %s (%lld bytes)\n",
                n.node, absl::StrJoin(ranks, ",").c_str(), gib(n.weights).c_str(),
                gib(n.kv_cache).c_str(), gib(n.workspace).c_str(), gib(n.os_reserve).c_str(),
                gib(n.total()).c_str(), gib(n.available).c_str(),
                static_cast<long long>(n.total()));
  }
  std::printf("  decode: %s tokens/s per sequence, %s tokens/s over %lld sequences "
              "(step %s at full context, of which sync %s)\n",
              rate(1.0 / e.cost.decode_step_s).c_str(), rate(e.cost.decode_tokens_per_s).c_str(),
              static_cast<long long>(r.batch), seconds(e.cost.decode_step_s).c_str(),
              seconds(e.cost.decode_sync_s).c_str());
  std::printf("  prefill: %s tokens/s (sync %s per token)\n",
              rate(e.cost.prefill_tokens_per_s).c_str(), seconds(e.cost.prefill_sync_s).c_str());
  int64_t syncs = 0;
  for (const partition::SyncPoint& s : e.sync_points) syncs += s.count;
  std::printf("  sync points per token: %lld (%zu kinds, see --json)\n\n",
              static_cast<long long>(syncs), e.sync_points.size());

  std::printf("layouts considered:\n");
  for (size_t i = 0; i < plan.layouts.size(); ++i) {
    const partition::LayoutEval& l = plan.layouts[i];
    if (l.shards.empty()) {
      std::printf("  %-12s does not split: %s\n", l.name().c_str(), l.refusal.c_str());
      continue;
    }
    std::printf("  %-12s largest node %s, decode %s tokens/s per sequence, prefill %s tokens/s%s",
                l.name().c_str(), gib(max_node_total(l)).c_str(),
                rate(1.0 / l.cost.decode_step_s).c_str(), rate(l.cost.prefill_tokens_per_s).c_str(),
                l.tp_within_nodes ? "" : ", TP across nodes");
    if (i == plan.chosen) {
      std::printf("  <- chosen\n");
    } else if (!l.fits) {
      std::printf("; does not fit: %s\n", l.refusal.c_str());
    } else {
      std::printf("\n");
    }
  }
}

nlohmann::ordered_json range_json(const partition::Range& r) { return {r.begin, r.end}; }

const char* sync_kind(partition::SyncKind k) {
  switch (k) {
    case partition::SyncKind::kAllReduce:
      return "all_reduce";
    case partition::SyncKind::kGather:
      return "gather";
    case partition::SyncKind::kSend:
      return "send";
  }
  return "?";
}

nlohmann::ordered_json layout_json(const partition::LayoutEval& e) {
  nlohmann::ordered_json j = {{"name", e.name()},         {"tp", e.tp},
                      {"pp", e.pp},               {"fits", e.fits},
                      {"refusal", e.refusal},     {"tp_within_nodes", e.tp_within_nodes},
                      {"max_kv_positions", e.max_kv_positions}};
  j["stages"] = nlohmann::ordered_json::array();
  for (const partition::Range& r : e.stages) j["stages"].push_back(range_json(r));
  j["nodes"] = nlohmann::ordered_json::array();
  for (const partition::NodeMemory& n : e.nodes) {
    j["nodes"].push_back({{"node", n.node},
                          {"ranks", n.ranks},
                          {"weights", n.weights},
                          {"kv_cache", n.kv_cache},
                          {"workspace", n.workspace},
                          {"os_reserve", n.os_reserve},
                          {"total", n.total()},
                          {"available", n.available},
                          {"fits", n.fits()}});
  }
  j["ranks"] = nlohmann::ordered_json::array();
  for (size_t i = 0; i < e.ranks.size(); ++i) {
    const partition::RankMemory& m = e.ranks[i];
    const partition::RankShard& s = e.shards[i];
    j["ranks"].push_back({{"rank", m.rank},
                          {"node", m.node},
                          {"weights", m.weights},
                          {"kv_cache", m.kv_cache},
                          {"workspace", m.workspace},
                          {"layers", range_json(s.layers)},
                          {"q_heads", range_json(s.q_heads)},
                          {"kv_heads", range_json(s.kv_heads)},
                          {"ffn", range_json(s.ffn)},
                          {"vocab", range_json(s.vocab)},
                          {"has_embedding", s.has_embedding},
                          {"has_head", s.has_head}});
  }
  j["sync_points"] = nlohmann::ordered_json::array();
  for (const partition::SyncPoint& s : e.sync_points) {
    j["sync_points"].push_back({{"what", s.what},
                                {"kind", sync_kind(s.kind)},
                                {"stage", s.stage},
                                {"count", s.count},
                                {"bytes_per_token", s.bytes_per_token},
                                {"ranks", s.n_ranks},
                                {"crosses_nodes", s.crosses_nodes},
                                {"decode_only", s.decode_only}});
  }
  if (!e.shards.empty()) {
    j["decode"] = {{"step_s", e.cost.decode_step_s},
                   {"sync_s", e.cost.decode_sync_s},
                   {"stage_s", e.cost.decode_stage_s},
                   {"tokens_per_s", e.cost.decode_tokens_per_s},
                   {"tokens_per_s_per_sequence", 1.0 / e.cost.decode_step_s}};
    j["prefill"] = {{"token_s", e.cost.prefill_token_s},
                    {"sync_s", e.cost.prefill_sync_s},
                    {"tokens_per_s", e.cost.prefill_tokens_per_s}};
  }
  return j;
}

void print_json(const partition::Plan& plan, const partition::ModelDesc& model) {
  const partition::ClusterDesc& c = plan.cluster;
  const partition::Request& r = plan.request;
  nlohmann::ordered_json j;
  j["model"] = {{"name", model.name},
                {"architecture", model.architecture},
                {"layers", model.dims.n_layers},
                {"bytes", plan.model_bytes}};
  j["cluster"] = {{"nodes", c.nodes},
                  {"ranks_per_node", c.ranks_per_node},
                  {"node_memory", c.node_memory_bytes},
                  {"os_reserve", c.os_reserve_bytes},
                  {"memory_bandwidth", c.memory_bandwidth},
                  {"compute", c.compute},
                  {"link_bandwidth", c.link_bandwidth},
                  {"link_latency", c.link_latency}};
  j["request"] = {{"context", r.context}, {"batch", r.batch}, {"prefill_chunk", r.prefill_chunk}};
  j["chosen"] = plan.layout().name();
  j["reason"] = plan.reason;
  j["layouts"] = nlohmann::ordered_json::array();
  for (const partition::LayoutEval& e : plan.layouts) j["layouts"].push_back(layout_json(e));
  std::printf("%s\n", j.dump(2).c_str());
}

int run_plan(const PlanFlags& f) {
  auto cluster = cluster_from(f);
  if (!cluster.ok()) return report_error("plan", cluster.status());
  auto file = gguf::File::Open(f.model, {.allow_missing_data = true});
  if (!file.ok()) return report_error("plan", file.status());
  auto model = model::model_desc_from_gguf(*file, f.kv_type);
  if (!model.ok()) return report_error("plan", model.status());
  partition::Request request;
  request.context = f.context;
  request.batch = f.batch;
  request.prefill_chunk = f.prefill_chunk;
  request.tp = f.tp;
  request.pp = f.pp;
  auto plan = partition::make_plan(*model, *cluster, request);
  if (!plan.ok()) return report_error("plan", plan.status());
  if (f.json) {
    print_json(*plan, *model);
  } else {
    print_text(*plan, *model);
  }
  return 0;
}

}  // namespace

void add_plan_command(CLI::App& app, int* exit_code) {
  auto f = std::make_shared<PlanFlags>();
  CLI::App* cmd = app.add_subcommand(
      "plan", "Choose a TP x PP layout for a model on a cluster, from its GGUF header alone");
  cmd->add_option("--model", f->model, "GGUF file (a header-only file is enough)")->required();
  cmd->add_option("--nodes", f->nodes, "Boxes (default 2)")->check(CLI::Range(1, 4096));
  cmd->add_option("--ranks-per-node", f->ranks_per_node, "Ranks on each box (default 1)")
      ->check(CLI::Range(1, 256));
  cmd->add_option("--node-memory", f->node_memory, "Memory per box (default 128GiB)");
  cmd->add_option("--os-reserve", f->os_reserve, "Kept free per box for the OS (default 8GiB)");
  cmd->add_option("--mem-bw", f->mem_bw, "Memory bandwidth per box (default 273GB/s)");
  cmd->add_option("--rank-mem-bw", f->rank_mem_bw,
                  "Bandwidth one rank can read alone, e.g. a CPU rank's threads (default: the box's)");
  cmd->add_option("--compute", f->compute, "Compute per box (default 31TFLOP/s)");
  cmd->add_option("--link", f->link, "Link bandwidth between boxes (default 200Gb/s)");
  cmd->add_option("--link-latency", f->link_latency, "Per collective over the link (default 30us)");
  cmd->add_option("--context", f->context, "KV cache positions per sequence (default 32768)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  cmd->add_option("--batch", f->batch, "Concurrent sequences (default 8)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--prefill-chunk", f->prefill_chunk, "Tokens per prefill pass (default 512)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--tp", f->tp, "Force the tensor-parallel size")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--pp", f->pp, "Force the pipeline-parallel size")->check(CLI::Range(1, 1 << 20));
  add_kv_type_option(*cmd, &f->kv_type);
  cmd->add_flag("--json", f->json, "Print the plan as JSON");
  cmd->callback([f, exit_code] { *exit_code = run_plan(*f); });
}

}  // namespace tandem::launcher
