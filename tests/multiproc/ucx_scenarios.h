// UCX scenarios of the multi-process test worker (see transport_worker.cc).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "transport/bootstrap/bootstrap.h"

namespace tandem::transport {

// "ucx_p2p", "ucx_collectives", "ucx_kill", "ucx_bench". TANDEM_TEST_PEER_FAILURE=0
// turns peer failure detection off.
absl::Status run_ucx_scenario(const std::string& scenario, Bootstrap& boot);

}  // namespace tandem::transport
