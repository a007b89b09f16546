#include "partition/memory_budget.h"

#include <algorithm>
#include <cstdio>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "absl/strings/str_cat.h"

namespace tandem::partition {
namespace {

// The names of every tensor of the Llama layout of this model: the union of
// what the ranks of any layout hold.
std::unordered_set<std::string> layout_names(const ModelDesc& model) {
  RankShard whole;
  whole.layers = {0, model.dims.n_layers};
  whole.q_heads = {0, model.dims.n_heads};
  whole.kv_heads = {0, model.dims.n_kv_heads};
  whole.ffn = {0, model.dims.ffn_dim};
  whole.vocab = {0, model.dims.n_vocab};
  whole.vocab_stride = model.dims.n_vocab;
  whole.has_embedding = true;
  whole.has_head = true;
  std::unordered_set<std::string> names;
  for (TensorShard& t : tensor_shards(model.dims, whole, model.tied_output)) {
    names.insert(std::move(t.name));
  }
  return names;
}

}  // namespace

int64_t replicated_extra_bytes(const ModelDesc& model) {
  const std::unordered_set<std::string> names = layout_names(model);
  int64_t bytes = 0;
  for (const TensorDesc& t : model.tensors) {
    if (!names.contains(t.name)) bytes += t.bytes();
  }
  return bytes;
}

absl::StatusOr<int64_t> shard_weight_bytes(const ModelDesc& model,
                                           std::span<const TensorShard> shards) {
  std::unordered_map<std::string_view, const TensorDesc*> by_name;
  for (const TensorDesc& t : model.tensors) by_name.emplace(t.name, &t);
  int64_t bytes = 0;
  for (const TensorShard& s : shards) {
    auto it = by_name.find(s.name);
    if (it == by_name.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model '", model.name, "' has no tensor '", s.name, "'"));
    }
    const TensorDesc& t = *it->second;
    if (t.n_rows != s.n_rows || t.n_cols != s.n_cols) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", s.name, "' of model '", model.name, "' is ", t.n_rows, " x ", t.n_cols,
          " (rows x columns); the model's dimensions make it ", s.n_rows, " x ", s.n_cols));
    }
    bytes += t.slice_bytes(s.rows, s.cols);
  }
  return bytes + replicated_extra_bytes(model);
}

int64_t kv_bytes_per_position(const ModelDesc& model, const RankShard& shard) {
  return shard.layers.size() * shard.kv_heads.size() * model.dims.head_dim * 2 *
         model.kv_element_bytes;
}

int64_t kv_positions(const ModelDesc& model, const Request& request) {
  const int64_t block = std::max<int64_t>(1, model.kv_block_positions);
  return (request.context + block - 1) / block * block * request.batch;
}

int64_t workspace_bytes(const ModelDesc& model, const RankShard& shard, const Request& request) {
  const ModelDims& d = model.dims;
  const int64_t tokens = std::min(request.prefill_chunk, request.context);
  const int64_t q_local = shard.q_heads.size() * d.head_dim;
  const int64_t kv_local = shard.kv_heads.size() * d.head_dim;
  const int64_t ffn_local = shard.ffn.size();
  const int64_t floats_per_token = 2 * d.dim + 2 * q_local + 2 * kv_local + 2 * ffn_local +
                                   d.head_dim + std::max(d.dim, ffn_local);
  int64_t bytes = 4 * tokens * floats_per_token;
  if (shard.has_head) bytes += 4 * tokens * d.n_vocab;
  return bytes;
}

std::vector<NodeMemory> node_memory(std::span<const RankMemory> ranks, const ClusterDesc& cluster) {
  std::vector<NodeMemory> nodes(static_cast<size_t>(cluster.nodes));
  for (int n = 0; n < cluster.nodes; ++n) {
    nodes[n].node = n;
    nodes[n].os_reserve = cluster.os_reserve_bytes;
    nodes[n].available = cluster.node_memory_bytes;
  }
  for (const RankMemory& r : ranks) {
    NodeMemory& n = nodes[static_cast<size_t>(r.node)];
    n.ranks.push_back(r.rank);
    n.weights += r.weights;
    n.kv_cache += r.kv_cache;
    n.workspace += r.workspace;
  }
  return nodes;
}

std::string format_gib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f GiB", static_cast<double>(bytes) / (1 << 30));
  return buf;
}

}  // namespace tandem::partition
