// The cost model: how long a layout takes per token, from three roofs.
// - Memory: the bytes a rank reads (its weights once per forward pass, its KV
//   cache per sequence) over its node's memory bandwidth, shared by the ranks
//   of the node that run at the same time.
// - Compute: 2 flops per multiply-add of the rank's matrices and attention,
//   over the node's flop/s. A stage takes the slower of the two roofs on its
//   slowest node.
// - Sync: each synchronization point costs latency + bytes on the wire /
//   bandwidth, over the link between nodes when its ranks span nodes and over
//   shared memory otherwise.
// Decode runs the pipeline stages one after another (one token cannot enter
// stage 2 before it leaves stage 1). Prefill splits the prompt into chunks
// that overlap across stages, so the slowest stage sets its pace.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "partition/model_desc.h"
#include "partition/shard.h"

namespace tandem::partition {

enum class SyncKind {
  kAllReduce,  // ring: 2 (p - 1) / p of the payload crosses each rank's link
  kGather,     // p slices to one rank: (p - 1) slices reach it
  kSend,       // point to point
};

// One synchronization of a token's forward pass, as data.
struct SyncPoint {
  std::string what;  // "stage 0 attention output all_reduce", ...
  SyncKind kind = SyncKind::kAllReduce;
  int stage = 0;               // the stage whose ranks run it (the sender for a send)
  int64_t count = 1;           // times per forward pass
  int64_t bytes_per_token = 0; // payload per token, each time (one rank's slice for a gather)
  int n_ranks = 1;             // ranks taking part
  bool crosses_nodes = false;  // over the link between nodes, not shared memory
  bool decode_only = false;    // not in prefill (only the prompt's last token is sampled)
};

// Bytes a SyncPoint puts on the slowest rank's link for `tokens` tokens at once.
double wire_bytes(const SyncPoint& sync, int64_t tokens);
// Seconds for one forward pass of `tokens` tokens: count x (latency + wire / bandwidth).
double sync_seconds(const SyncPoint& sync, int64_t tokens, const ClusterDesc& cluster);

// The sync points of a tp x pp layout, per forward pass (activations in f32):
// - for tp > 1, in every stage: an all_reduce of dim after attention and one
//   after the FFN, per layer; on the first stage the all_reduce that completes
//   the vocab-parallel embedding lookup; on the last stage the gather of the
//   vocab-parallel logits (vocab_stride per rank);
// - for pp > 1: the hidden state (dim) sent from each stage to the next, by
//   every TP rank (each holds the whole state after its all_reduce), and the
//   sampled token (4 bytes) sent from the last stage back to rank 0.
// `stages` are the layer ranges; ranks fill nodes ranks_per_node at a time.
std::vector<SyncPoint> sync_points(const ModelDims& dims, int tp, std::span<const Range> stages,
                                   const ClusterDesc& cluster);

// What one rank does in one forward pass, independent of the request.
struct RankWork {
  int rank = 0;
  int stage = 0;
  int node = 0;
  int64_t weight_bytes_read = 0;  // every held weight but the embedding table (a lookup reads a row)
  int64_t matmul_macs = 0;        // multiply-adds per token in its matrices, the head included
  int64_t kv_bytes_per_position = 0;  // of one sequence, in its layers and KV heads
  int64_t attention_macs_per_position = 0;  // per token per cached position: 2 x q_local x layers
};

struct CostEstimate {
  // One decode step: a token for each of the batch's sequences, every
  // sequence at position `context` (the slowest step of a full cache).
  double decode_step_s = 0;
  double decode_sync_s = 0;          // the part of it spent in sync points
  double decode_tokens_per_s = 0;    // batch / decode_step_s, summed over the sequences
  std::vector<double> decode_stage_s;  // the memory/compute part, stage by stage
  // Prefill, per prompt token, chunks of prefill_chunk tokens, attention over
  // context / 2 positions on average.
  double prefill_token_s = 0;
  double prefill_sync_s = 0;  // per token
  double prefill_tokens_per_s = 0;
};

// decode: stage s takes max over its nodes n of
//     max(sum_r bytes_r / memory_bandwidth, sum_r flops_r / compute)
//   with, for each rank r of stage s on node n, B = batch, L = context:
//     bytes_r = weight_bytes_read + B * L * kv_bytes_per_position
//     flops_r = 2 * B * (matmul_macs + L * attention_macs_per_position);
//   the step is the sum over stages plus every sync point for B tokens.
// prefill (per token, T = min(prefill_chunk, context), L/2 positions on average):
//     bytes_r = (weight_bytes_read + L/2 * kv_bytes_per_position) / T + kv_bytes_per_position
//     flops_r = 2 * (matmul_macs + L/2 * attention_macs_per_position);
//   the slowest stage plus every non-decode-only sync point for T tokens, / T.
CostEstimate estimate_cost(std::span<const RankWork> ranks, int pp,
                           std::span<const SyncPoint> syncs, const ClusterDesc& cluster,
                           const Request& request);

}  // namespace tandem::partition
