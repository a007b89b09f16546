// What UCX picked for an endpoint, in one line, for the start-up log.
#pragma once

#include <ucp/api/ucp.h>

#include <string>

namespace tandem::transport::ucx {

// The distinct transport/device pairs of the endpoint's lanes, e.g.
// "tcp/lo" or "posix/memory cma/memory self/memory", parsed from
// ucp_ep_print_info(); the raw dump when parsing finds nothing.
std::string endpoint_transports(ucp_ep_h ep);

}  // namespace tandem::transport::ucx
