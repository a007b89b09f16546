// The start-up link check of a cluster (see transport/link_probe.h): rank 0
// measures every peer, logs a line per link and a WARNING naming the fix for
// each link that is not what a user would expect, and, with --require-link
// rdma or --min-link-bandwidth, refuses to start instead. Every rank calls it
// once the cluster is joined, before the model loads.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "transport/communicator.h"
#include "transport/link_probe.h"

namespace CLI {
class App;
}

namespace tandem::launcher {

struct LinkCheckFlags {
  std::string require = "any";  // any | rdma
  std::string min_bandwidth;    // "10GB/s"; empty: none
  bool skip = false;
};
void add_link_check_flags(CLI::App& command, LinkCheckFlags& flags);

// The flags checked and parsed: the least bandwidth in GB/s (0: none).
absl::StatusOr<double> min_link_gbps(const LinkCheckFlags& flags);

// Collective over `comm`. On rank 0, the measured links (none when skipped).
absl::StatusOr<std::vector<transport::LinkMeasurement>> check_links(
    transport::Communicator& comm, const LinkCheckFlags& flags, std::chrono::milliseconds timeout);

}  // namespace tandem::launcher
