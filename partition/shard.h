// What one rank of a TP x PP layout holds of a dense decoder-only
// transformer, Megatron style, as pure functions of the model's dimensions and
// the rank's place in the World:
// - q, k, v, gate and up are column-parallel: a rank holds a range of their
//   output rows (whole heads for q/k/v, a range of the FFN for gate/up);
// - o and down are row-parallel: a rank holds the matching range of their
//   input columns, and the partial outputs are summed by an all_reduce;
// - the token embedding and the output head are vocab-parallel: a rank holds
//   a range of vocabulary rows; embedding lookups outside it give zeros (an
//   all_reduce completes them) and the logits are gathered;
// - norms and RoPE frequencies are replicated;
// - pipeline stages hold consecutive layer ranges, the embedding on the first
//   and the head on the last.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "partition/world.h"

namespace tandem::partition {

// Half-open [begin, end).
struct Range {
  int64_t begin = 0;
  int64_t end = 0;
  constexpr int64_t size() const { return end - begin; }
  constexpr bool empty() const { return end <= begin; }
  constexpr bool contains(int64_t i) const { return i >= begin && i < end; }
  friend constexpr bool operator==(const Range&, const Range&) = default;
};

// The dimensions slicing depends on.
struct ModelDims {
  int64_t n_layers = 0;
  int64_t dim = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn_dim = 0;
  int64_t n_vocab = 0;
  // Column slices of row-parallel matrices (o, down) must start and end on a
  // multiple of this: the largest quantization block among the matrices (32
  // for Q8_0/Q4_0, 256 for K-quants, 1 for float types).
  int64_t col_align = 32;
};

// `n` items split into `parts` consecutive ranges of whole `align`-sized
// groups, as evenly as possible, the larger ranges first. The last range also
// takes a final partial group. Ranges may be empty when there are fewer groups
// than parts.
Range split_range(int64_t n, int64_t parts, int64_t part, int64_t align = 1);

// Layer ranges of `pp` stages over `n_layers`, as even as possible (earlier
// stages take the remainder).
std::vector<Range> even_stages(int64_t n_layers, int pp);

struct RankShard {
  Range layers;    // this stage's layers
  Range q_heads;   // query heads (whole heads; q rows = heads * head_dim)
  Range kv_heads;  // KV heads; when tp > n_kv_heads several ranks hold copies
  Range ffn;       // rows of gate/up, columns of down
  Range vocab;     // rows of the embedding and of the output head
  // Rows every TP rank's vocab slice is padded to for the logits gather:
  // ceil(n_vocab / tp).
  int64_t vocab_stride = 0;
  bool has_embedding = false;  // first stage
  bool has_head = false;       // last stage

  friend bool operator==(const RankShard&, const RankShard&) = default;
};

// The shard of `world.rank()`. `stages` are the layer ranges of the pipeline
// stages (empty: even_stages); they must cover [0, n_layers) in order with no
// empty stage. INVALID_ARGUMENT, naming the numbers, when the layout cannot
// split this model: KV heads neither divisible by tp nor dividing it, heads not
// divisible by tp, or slices that break quantization blocks.
absl::StatusOr<RankShard> make_rank_shard(const ModelDims& dims, const World& world,
                                          std::span<const Range> stages = {});

// How a tensor is cut.
enum class SplitKind { kReplicated, kColumnParallel, kRowParallel, kVocabParallel };

// One tensor of a rank's shard: its GGUF name, and the rows and columns of the
// row-major matrix [n_rows][n_cols] (ggml dims {n_cols, n_rows}) that the rank
// holds. Vectors have rows {0, 1}.
struct TensorShard {
  std::string name;
  SplitKind split = SplitKind::kReplicated;
  Range rows;
  Range cols;
  int64_t n_rows = 0;  // of the whole tensor
  int64_t n_cols = 0;
};

// Every tensor of the Llama layout that `shard` holds, in file order of a
// llama.cpp conversion. `tied_output`: the file has no output.weight and the
// head is the embedding (then the last stage holds token_embd's vocab rows).
std::vector<TensorShard> tensor_shards(const ModelDims& dims, const RankShard& shard,
                                       bool tied_output);

}  // namespace tandem::partition
