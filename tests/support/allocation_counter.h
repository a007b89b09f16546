// Allocation counts for tests that show a hot path allocates nothing. A binary
// that links tandem_allocation_counter has its global operator new and delete
// replaced by counting ones (allocation_counter.cc).
#pragma once

#include <cstdint>

namespace tandem::testing {

// Every operator new of the process so far.
int64_t allocations_in_process();
// Those made by the calling thread (a process may have threads, such as a
// rendezvous store's, that serve others meanwhile).
int64_t allocations_on_this_thread();

}  // namespace tandem::testing
