// Rank arithmetic of a TP x PP layout. Pipeline stages are outermost and
// tensor-parallel ranks innermost (rank = pp_rank * tp + tp_rank), so that a
// TP group, which synchronizes twice per layer, is a run of consecutive ranks
// and stays inside one box when ranks are placed box by box.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem::partition {

class World {
 public:
  // One rank alone.
  constexpr World() : World(1, 1, 0) {}
  // INVALID_ARGUMENT unless tp >= 1, pp >= 1 and 0 <= rank < tp * pp.
  static absl::StatusOr<World> Create(int tp, int pp, int rank);

  constexpr int tp() const { return tp_; }
  constexpr int pp() const { return pp_; }
  constexpr int size() const { return tp_ * pp_; }
  constexpr int rank() const { return rank_; }
  constexpr int tp_rank() const { return rank_ % tp_; }
  constexpr int pp_rank() const { return rank_ / tp_; }
  constexpr bool is_first_stage() const { return pp_rank() == 0; }
  constexpr bool is_last_stage() const { return pp_rank() == pp_ - 1; }

  // The global rank at (pp_rank, tp_rank).
  constexpr int rank_of(int pp_rank, int tp_rank) const { return pp_rank * tp_ + tp_rank; }
  // The ranks of this rank's TP group (its stage), ascending.
  std::vector<int> tp_group() const;
  // The ranks holding this rank's TP shard in every stage, ascending.
  std::vector<int> pp_group() const;
  // The same TP shard in the previous / next stage; -1 at the ends.
  constexpr int prev_stage_rank() const {
    return is_first_stage() ? -1 : rank_of(pp_rank() - 1, tp_rank());
  }
  constexpr int next_stage_rank() const {
    return is_last_stage() ? -1 : rank_of(pp_rank() + 1, tp_rank());
  }
  // Whether every TP group lies within one node when ranks fill nodes in
  // order, ranks_per_node at a time.
  constexpr bool tp_groups_within_nodes(int ranks_per_node) const {
    return ranks_per_node > 0 && (ranks_per_node % tp_ == 0 || tp_ == 1);
  }

 private:
  constexpr World(int tp, int pp, int rank) : tp_(tp), pp_(pp), rank_(rank) {}
  int tp_;
  int pp_;
  int rank_;
};

}  // namespace tandem::partition
