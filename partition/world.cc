#include "partition/world.h"

#include "absl/strings/str_cat.h"

namespace tandem::partition {

absl::StatusOr<World> World::Create(int tp, int pp, int rank) {
  if (tp < 1 || pp < 1 || tp > (1 << 16) || pp > (1 << 16)) {
    return absl::InvalidArgumentError(absl::StrCat("layout tp ", tp, " x pp ", pp,
                                                   ": both must be between 1 and 65536"));
  }
  if (rank < 0 || rank >= tp * pp) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " outside the world of ", tp * pp, " (tp ", tp, " x pp ", pp, ")"));
  }
  return World(tp, pp, rank);
}

std::vector<int> World::tp_group() const {
  std::vector<int> ranks;
  for (int t = 0; t < tp_; ++t) ranks.push_back(rank_of(pp_rank(), t));
  return ranks;
}

std::vector<int> World::pp_group() const {
  std::vector<int> ranks;
  for (int p = 0; p < pp_; ++p) ranks.push_back(rank_of(p, tp_rank()));
  return ranks;
}

}  // namespace tandem::partition
