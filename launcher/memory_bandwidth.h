// Measures how fast this machine streams memory with n threads, so that decode
// speed can be quoted as a fraction of the bound measured in the same run.
#pragma once

#include <cstddef>
#include <utility>

#include "absl/status/statusor.h"
#include "runtime/tensor/host_buffer.h"

namespace tandem::launcher {

// A filled buffer kept for repeated measurements: tandem bench probes the
// bandwidth next to every timed run, since on a shared host it drifts within
// seconds, and pairs each run with its own bound.
class ReadProbe {
 public:
  // RESOURCE_EXHAUSTED when `bytes` cannot be allocated.
  static absl::StatusOr<ReadProbe> Create(size_t bytes);

  // Bytes per second that `n_threads` threads read from the buffer (best of
  // `repetitions` passes).
  double measure(int n_threads, int repetitions) const;

 private:
  explicit ReadProbe(HostBuffer memory) : memory_(std::move(memory)) {}
  HostBuffer memory_;
};

}  // namespace tandem::launcher
