// Measures how fast this machine streams memory with n threads, so that decode
// speed can be quoted as a fraction of the bound measured in the same run.
#pragma once

#include <cstddef>

namespace tandem::launcher {

// Bytes per second that `n_threads` threads read from a buffer of `bytes`
// (best of `repetitions` passes).
double measure_read_bandwidth(int n_threads, size_t bytes, int repetitions);

}  // namespace tandem::launcher
