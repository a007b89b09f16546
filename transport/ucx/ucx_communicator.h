// The UCX backend: one UCP context and worker per rank, worker addresses
// swapped through the bootstrap store, an endpoint to every peer, and tag
// matching (tag = source rank << 32 | user tag). Progress is explicit: it
// happens only inside Request::wait()/test(), on the caller's thread.
//
// UCX_TLS and the other UCX_* variables are honoured as the user sets them
// (tcp, sm, rc...); the selected transports are logged once at start-up.
// Peer failure detection (UCP_ERR_HANDLING_MODE_PEER) fails every pending
// and future operation with a dead peer as UNAVAILABLE; in UCX 1.13 it also
// keeps data off shared memory (openucx/ucx#8477), so a single-box job that
// prefers speed over failure detection can turn it off.
#pragma once

#include <chrono>
#include <memory>

#include "absl/status/statusor.h"
#include "transport/bootstrap/bootstrap.h"
#include "transport/communicator.h"

namespace tandem::transport {

struct UcxOptions {
  // UCP_ERR_HANDLING_MODE_PEER on every endpoint (costs shared memory).
  bool peer_failure_detection = true;
  // UCX_KEEPALIVE_INTERVAL when the user did not set it: how soon a silent
  // peer's death is noticed (UCX's default is 20 s).
  std::chrono::milliseconds keepalive_interval{1000};
  // Bounds the address exchange and the endpoint wire-up.
  std::chrono::milliseconds setup_timeout{60000};
  // One stderr line per rank naming the transports UCX picked.
  bool log_transports = true;
  // 2 ranks on one host, where UCX_TLS lets UCX use cma, sum all_reduces
  // above 16 KiB through each other's memory (peer_memory.h), with fewer
  // copies and no rendezvous handshakes, also when peer failure detection
  // made UCX take TCP. Off: UCX's tag protocols carry them.
  bool direct_peer_memory = true;
};

// Collective over the bootstrap's ranks: every rank must call it.
absl::StatusOr<std::unique_ptr<Communicator>> make_ucx_communicator(Bootstrap& bootstrap,
                                                                    UcxOptions options = {});

}  // namespace tandem::transport
