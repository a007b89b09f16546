// The `local` backend: n communicators in one process that talk through
// shared in-process mailboxes, one thread per rank. It exists for unit tests
// of the layers above (an engine with TP = 4 in one test binary), and as the
// oracle the network backends are compared with.
//
// Sends are eager (the data is copied into the receiver's mailbox, and the
// send completes at once); receives match by (source, tag) in order. abort()
// on one rank fails its own pending and future operations with ABORTED and
// the other ranks' pending and future receives from it with UNAVAILABLE
// ("peer N aborted: reason"), as a dead peer would. Destroying a communicator
// counts as its death too.
#pragma once

#include <memory>
#include <vector>

#include "transport/communicator.h"

namespace tandem::transport {

// n_ranks >= 1. Element i is rank i.
std::vector<std::unique_ptr<Communicator>> make_local_world(int n_ranks);

}  // namespace tandem::transport
