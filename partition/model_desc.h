// What the planner knows about a model and about the machines it will run on,
// as plain data: a ModelDesc is read from a GGUF header (runtime/model/
// model_desc.h builds it; the tensor data is never read), a ClusterDesc
// describes the boxes, a Request the load to serve. Storage is given per
// tensor as block elements and block bytes, so that partition/ needs no table
// of quantization types.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "partition/shard.h"

namespace tandem::partition {

// One tensor as a row-major matrix [n_rows][n_cols] (ggml dims {n_cols,
// n_rows, ...}; n_rows is the product of the dims after the first), stored in
// blocks of `block_elements` consecutive elements of a row, `block_bytes` each.
struct TensorDesc {
  std::string name;
  int64_t n_cols = 0;
  int64_t n_rows = 0;
  int64_t block_elements = 1;
  int64_t block_bytes = 4;
  std::string type_name;  // for people: "q4_k", "f32"

  int64_t row_bytes(int64_t n_elements) const {
    return (n_elements + block_elements - 1) / block_elements * block_bytes;
  }
  int64_t bytes() const { return n_rows * row_bytes(n_cols); }
  // Bytes of rows x cols of the matrix.
  int64_t slice_bytes(Range rows, Range cols) const { return rows.size() * row_bytes(cols.size()); }
};

struct ModelDesc {
  std::string name;          // general.name, or the file name
  std::string architecture;  // general.architecture
  ModelDims dims;
  std::vector<TensorDesc> tensors;
  bool tied_output = false;    // no output.weight: the head is the token embedding
  int64_t context_length = 0;  // the context the model was trained for
  // Mixture of experts: the expert count (0 for a dense model). The planner
  // refuses these until the MoE layout lands.
  int64_t n_experts = 0;
  int64_t n_experts_used = 0;
  // How the runtime stores the KV cache: bytes per element (the engine's
  // cache holds f32) and positions per cache block (a sequence's positions are
  // rounded up to whole blocks).
  int64_t kv_element_bytes = 4;
  int64_t kv_block_positions = 16;

  const TensorDesc* find(std::string_view tensor_name) const;
  int64_t total_bytes() const;
};

// The boxes. The defaults describe a pair of NVIDIA DGX Sparks (GB10), one
// rank each, linked by their ConnectX-7 ports.
struct ClusterDesc {
  int nodes = 2;
  int ranks_per_node = 1;
  // 128 GiB of LPDDR5x per Spark, shared by the CPU and the GPU.
  int64_t node_memory_bytes = int64_t{128} << 30;
  // Kept free on every node for DGX OS (the desktop, Docker, the drivers) and
  // the kernel. Running out of unified memory freezes a GB10 instead of failing
  // an allocation, so the budget keeps this margin rather than plan to the byte.
  int64_t os_reserve_bytes = int64_t{8} << 30;
  // 273 GB/s: the Spark's published LPDDR5x bandwidth, what decode is bound by.
  double memory_bandwidth = 273e9;  // bytes/s per node
  // 31 TFLOP/s: GB10's single-precision figure as NVIDIA gave it at Hot Chips
  // 2025. The 1 PFLOP headline is sparse FP4, which our kernels (that compute
  // in f32) never reach; prefill predictions use the f32 figure.
  double compute = 31e12;  // flop/s per node
  // What one rank can read on its own, in bytes/s; 0: no limit below the
  // node's. A CPU rank is bounded by its threads (one core reads well under
  // what the memory gives all of them), which is what makes tensor
  // parallelism pay on a single box; a GPU rank reaches the node's figure.
  double rank_memory_bandwidth = 0;
  // One 200 Gb/s ConnectX-7 link between the boxes. 30 us per collective is
  // the figure for a small all_reduce between two boxes (a few network
  // round trips plus the transport's software), not a measurement of ours.
  double link_bandwidth = 200e9 / 8;  // bytes/s
  double link_latency = 30e-6;        // s per collective or send
  // Between ranks of one node, through shared memory.
  double local_bandwidth = 273e9 / 4;  // a copy in and out, on both ranks
  double local_latency = 5e-6;

  int world_size() const { return nodes * ranks_per_node; }
  int node_of(int rank) const { return rank / ranks_per_node; }
};

// The load a plan must hold.
struct Request {
  int64_t context = 32768;      // positions per sequence in the KV cache
  int64_t batch = 8;            // concurrent sequences
  int64_t prefill_chunk = 512;  // tokens per forward pass (the engine's max_batch_tokens)
  int tp = 0;                   // forced layout; 0: the planner chooses
  int pp = 0;
};

}  // namespace tandem::partition
