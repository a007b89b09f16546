// The oracle for the matmul kernels: plain scalar code with double
// accumulation over the same converted activations (fp16-rounded, bf16 or
// q8_0 as activation_type says), so any difference from matmul comes from the
// kernels' float summation order alone. For tests and tools, not for speed.
#pragma once

#include <cstdint>

#include "runtime/kernels/cpu/matmul.h"

namespace tandem::kernels {

// Same contract as matmul (y[t*ldy + r]) for row-major matrices; allocates its
// own buffers.
void matmul_reference(const Matrix& w, const float* x, int64_t ldx, int64_t n_tokens, float* y,
                      int64_t ldy);

// sum_c |W[r][c] * x'[t][c]| with x' the converted activations: the scale
// that normalizes the error of y[t*ldy + r] in tests.
void matmul_abs_reference(const Matrix& w, const float* x, int64_t ldx, int64_t n_tokens, float* y,
                          int64_t ldy);

}  // namespace tandem::kernels
