// The memory a layout needs, rank by rank and node by node: the rank's shard
// of the weights, its KV cache for the requested context and sequences, its
// activation buffers, and on every node a reserve for the operating system.
// All in bytes, exact where the runtime's allocation is known (weights, KV
// cache) and an upper estimate where it is not (workspace).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "partition/model_desc.h"
#include "partition/shard.h"

namespace tandem::partition {

struct RankMemory {
  int rank = 0;
  int node = 0;
  int64_t weights = 0;    // the rank's tensor shards plus replicated extras
  int64_t kv_cache = 0;   // keys and values of its layers and KV heads
  int64_t workspace = 0;  // activations, matmul scratch and logits
  int64_t total() const { return weights + kv_cache + workspace; }
};

struct NodeMemory {
  int node = 0;
  std::vector<int> ranks;
  int64_t weights = 0;
  int64_t kv_cache = 0;
  int64_t workspace = 0;
  int64_t os_reserve = 0;
  int64_t available = 0;  // the node's memory
  int64_t total() const { return weights + kv_cache + workspace + os_reserve; }
  bool fits() const { return total() <= available; }
};

// Bytes of the tensors that `shards` list, sliced, plus every tensor of the
// model outside the Llama layout (rope_freqs.weight, ...), which each rank
// holds whole. INVALID_ARGUMENT, naming the tensor, when one of `shards` is
// missing from the model or has another shape than its dimensions imply.
absl::StatusOr<int64_t> shard_weight_bytes(const ModelDesc& model,
                                           std::span<const TensorShard> shards);

// Bytes of tensors outside the Llama layout, which every rank holds whole.
int64_t replicated_extra_bytes(const ModelDesc& model);

// KV cache bytes of one position of one sequence in the rank's layers and KV
// heads: layers x kv_heads x head_dim x 2 (keys and values) x element bytes.
int64_t kv_bytes_per_position(const ModelDesc& model, const RankShard& shard);

// Positions the rank's cache holds: the context rounded up to whole cache
// blocks, for each of the batch's sequences.
int64_t kv_positions(const ModelDesc& model, const Request& request);

// The rank's activation buffers for a forward pass of
// T = min(prefill_chunk, context) tokens, in f32 (the engine's
// LlamaWorkspace, sliced): the residual stream x, the normed input xb, q, the
// attention output, k, v, gate, up, the RoPE table (head_dim per token) and a
// matmul scratch as large as the widest input (dim or the FFN slice):
//   4 * T * (2 dim + 2 q_local + 2 kv_local + 2 ffn_local + head_dim
//            + max(dim, ffn_local))
// plus, on the last stage, the gathered logits: 4 * T * n_vocab.
int64_t workspace_bytes(const ModelDesc& model, const RankShard& shard, const Request& request);

// Sums ranks into their nodes (ranks fill nodes in order) and adds each node's
// OS reserve.
std::vector<NodeMemory> node_memory(std::span<const RankMemory> ranks, const ClusterDesc& cluster);

// "113.2 GiB"
std::string format_gib(int64_t bytes);

}  // namespace tandem::partition
