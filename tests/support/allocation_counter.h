// Allocation counts for tests that show a hot path allocates nothing. A binary
// that links tandem_allocation_counter has its global operator new and delete
// replaced by counting ones (allocation_counter.cc).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tandem::testing {

// Every operator new of the process so far.
int64_t allocations_in_process();
// Those made by the calling thread (a process may have threads, such as a
// rendezvous store's, that serve others meanwhile).
int64_t allocations_on_this_thread();

// Runs `step` `warmup` times, then `steps` times while counting this thread's
// allocations: the first failed step's status, or INTERNAL saying how many
// allocations `who` made.
template <class Step>
absl::Status expect_steps_allocate_nothing(Step&& step, int warmup, int steps,
                                           const std::string& who) {
  for (int i = 0; i < warmup; ++i) {
    if (absl::Status s = step(); !s.ok()) return s;
  }
  const int64_t before = allocations_on_this_thread();
  for (int i = 0; i < steps; ++i) {
    if (absl::Status s = step(); !s.ok()) return s;
  }
  const int64_t allocated = allocations_on_this_thread() - before;
  if (allocated == 0) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(who, ": ", steps, " steps made ", allocated, " heap allocations"));
}

}  // namespace tandem::testing
