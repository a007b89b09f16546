// The layout when the user names none. On a cluster of several ranks with no
// --tp/--pp, rank 0 asks the planner (partition::make_plan) which TP x PP
// layout serves this model fastest on these boxes, with the links it measured
// at start-up and this box's memory, prints the choice and the reason, and
// sends it to every other rank, which load with it.
#pragma once

#include "absl/status/status.h"
#include "launcher/cluster.h"
#include "runtime/engine/engine.h"

namespace tandem::launcher {

// Fills options.tp, options.pp and options.stages when tp * pp == 1 on a
// cluster of several ranks; leaves a given layout alone. Every rank (process)
// of the cluster calls it before loading; an error (the model cannot be read,
// no layout fits) reaches every rank.
absl::Status choose_layout(const Cluster& cluster, engine::EngineOptions& options);

}  // namespace tandem::launcher
