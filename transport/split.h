// The default sub-communicator: a TP group or a PP pair carved out of a
// parent, sending through the parent's p2p with translated ranks and its own
// tag namespace (group_id + 1 in the tag's top 7 bits), so that groups that
// share ranks never match each other's messages. Its collectives are the
// defaults, run over its own ranks. Backends with a native notion of groups
// (MPI_Comm_split, NCCL) override Communicator::split instead.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "transport/communicator.h"

namespace tandem::transport {

// Validates `ranks` (ascending, within the parent, containing the parent's
// rank) and `group_id` (< kMaxGroupId) and builds the sub-communicator. The
// parent must outlive it. Split of a split goes straight to the root parent,
// so every group of one world shares the root's group_id space.
absl::StatusOr<std::unique_ptr<Communicator>> make_split_communicator(Communicator& parent,
                                                                      std::span<const int> ranks,
                                                                      uint32_t group_id);

}  // namespace tandem::transport
