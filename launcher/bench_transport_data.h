// Seeded data for `tandem bench transport`: element i of rank r is a value in
// [-1, 1) rounded to the dtype, so every rank can compute every other rank's
// data and check what an operation delivered (nccl-tests does the same).
#pragma once

#include <cstddef>
#include <cstdint>

#include "transport/communicator.h"

namespace tandem::launcher {

// Writes rank `rank`'s first `count` elements of `type` to `out`.
void fill(std::byte* out, uint64_t count, transport::DataType type, int rank);

// Elements of `got` that differ from rank `src`'s seeded data, bit for bit.
uint64_t count_mismatches(const std::byte* got, uint64_t count, transport::DataType type, int src);

// Elements of `got` that are not the sum over ranks [0, n) of the seeded data,
// within the dtype's rounding.
uint64_t count_wrong_sums(const std::byte* got, uint64_t count, transport::DataType type, int n);

}  // namespace tandem::launcher
