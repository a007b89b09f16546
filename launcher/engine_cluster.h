// One engine on every rank of a cluster: rank 0 drives it, the other ranks
// (processes, or threads for the local transport) serve it from run_worker().
#pragma once

#include <functional>
#include <string_view>

#include "launcher/cluster.h"
#include "runtime/engine/engine.h"

namespace tandem::launcher {

// Loads `options` on every rank of `cluster` (filling in the communicator,
// and the planner's layout when none was given), calls `drive` on
// rank 0 and serves it elsewhere; returns the exit code, errors reported as
// `command`'s. Every rank calls it the same number of times.
int run_engine_cluster(std::string_view command, Cluster& cluster, engine::EngineOptions options,
                       const std::function<int(engine::Engine&)>& drive);

}  // namespace tandem::launcher
