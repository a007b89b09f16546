// What UCX picked for an endpoint, in one line, for the start-up log.
#pragma once

#include <ucp/api/ucp.h>

#include <string>

namespace tandem::transport::ucx {

// The distinct transport/device pairs of the endpoint's lanes, e.g.
// "tcp/lo" or "posix/memory cma/memory self/memory", parsed from
// ucp_ep_print_info(); the raw dump when parsing finds nothing.
std::string endpoint_transports(ucp_ep_h ep);

// Whether the context may use `resource` ("cma/memory"): whether UCX_TLS
// lets it, whatever the endpoints then pick. From ucp_context_print_info().
bool context_has_resource(ucp_context_h context, const std::string& resource);

}  // namespace tandem::transport::ucx
