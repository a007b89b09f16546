// UCX scenarios of the multi-process test worker (see transport_worker.cc).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "transport/bootstrap/bootstrap.h"
#include "transport/communicator.h"

namespace tandem::transport {

// "ucx_p2p", "ucx_collectives", "ucx_all" (both), "ucx_kill", "ucx_bench",
// "ucx_no_alloc" (the decode-sized exchanges allocate nothing once warm), and
// "ucx_stream" / "ucx_stream_p2p" (large all_reduces, and exchanges, until a
// fault the test injects; each call bounded by TANDEM_TEST_OP_DEADLINE_MS,
// default 4000), "ucx_large_all_reduce" (odd sizes of every summable type
// around the switch-over to the direct path of 2 ranks on shared memory) and
// "ucx_large_all_reduce_abort" (2 ranks: rank 0 aborted while rank 1 is late)
// and "ucx_large_all_reduce_pairs" (the same sizes in pairs split from the
// world, as TP groups of 2, then in the world).
// TANDEM_TEST_PEER_FAILURE=0 turns peer failure detection off.
absl::Status run_ucx_scenario(const std::string& scenario, Bootstrap& boot);

// The "ucx_large_*" scenarios (ucx_large_scenarios.cc).
absl::Status run_large_all_reduce_scenario(const std::string& scenario, Communicator& comm);

}  // namespace tandem::transport
