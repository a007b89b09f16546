// Element-wise sums of the default all_reduce, and the f16/bf16 conversions
// they need (the transport has its own: it includes nothing from runtime/).
#pragma once

#include <cstddef>
#include <cstdint>

#include "transport/communicator.h"

namespace tandem::transport {

float f16_to_f32(uint16_t h);
// Round to nearest, ties to even; overflow gives infinity, NaN stays NaN.
uint16_t f32_to_f16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);

// True for the types all_reduce can sum: f32, f16, bf16, i32.
bool reducible(DataType type);

// inout[i] = inout[i] + in[i] for `count` elements. f16 and bf16 are added in
// f32 and rounded once (to nearest even); i32 wraps. The sum is commutative
// bit for bit, which is what makes recursive doubling give identical results
// on both partners of an exchange.
void reduce_sum(void* inout, const void* in, size_t count, DataType type);

}  // namespace tandem::transport
