// UCX scenarios of the multi-process test worker (see transport_worker.cc).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "transport/bootstrap/bootstrap.h"

namespace tandem::transport {

// "ucx_p2p", "ucx_collectives", "ucx_all" (both), "ucx_kill", "ucx_bench",
// "ucx_no_alloc" (the decode-sized exchanges allocate nothing once warm), and
// "ucx_stream" / "ucx_stream_p2p" (large all_reduces, and exchanges, until a
// fault the test injects; each call bounded by TANDEM_TEST_OP_DEADLINE_MS,
// default 4000). TANDEM_TEST_PEER_FAILURE=0 turns peer failure detection off.
absl::Status run_ucx_scenario(const std::string& scenario, Bootstrap& boot);

}  // namespace tandem::transport
