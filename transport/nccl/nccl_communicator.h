// The NCCL backend: a Communicator whose buffers are device pointers on one
// GPU per rank. Rank 0's ncclUniqueId travels through the bootstrap store;
// the communicator is non-blocking (ncclCommInitRankConfig, blocking = 0), so
// its set-up and every call are polled against a deadline
// (ncclCommGetAsyncError), and completion is a polled cudaEventQuery: nothing
// here blocks forever. A timed-out or failed NCCL operation leaves work on
// the GPU that only ncclCommAbort can stop, so it aborts the communicator:
// that call returns DEADLINE_EXCEEDED (or the error), later ones ABORTED.
//
// all_reduce, all_gather, broadcast and barrier are NCCL's on the
// communicator's stream. isend/irecv are ncclSend/ncclRecv on the same stream,
// each its own NCCL operation: NCCL has no tags (they are ignored) and
// cannot see a size mismatch, so sizes must match, and a pair of ranks must
// issue their p2p calls in the same order (a send and a receive both posted
// first by two ranks to each other wait on each other). split() is
// UNIMPLEMENTED (ncclCommSplit needs every rank of the parent).
#pragma once

#include <chrono>
#include <memory>

#include "absl/status/statusor.h"
#include "transport/bootstrap/bootstrap.h"
#include "transport/communicator.h"

namespace tandem::transport {

struct NcclOptions {
  // Bounds the id exchange and ncclCommInitRankConfig.
  std::chrono::milliseconds setup_timeout{60000};
};

// Collective over the bootstrap's ranks: every rank must call it, each with
// its own CUDA device ordinal.
absl::StatusOr<std::unique_ptr<Communicator>> make_nccl_communicator(Bootstrap& bootstrap,
                                                                     int device,
                                                                     NcclOptions options = {});

}  // namespace tandem::transport
