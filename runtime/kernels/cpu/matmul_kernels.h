// Internal interface between the matmul dispatcher (matmul.cc) and the
// per-instruction-set kernel files. Nothing here is inline or templated on
// purpose: each ISA file is compiled with its own -m flags, and code shared
// through a header would be merged across them by the linker, letting AVX
// instructions leak into code that runs before the CPU check.
#pragma once

#include <cstddef>
#include <cstdint>

#include "runtime/kernels/cpu/matmul.h"
#include "runtime/tensor/dtype.h"

namespace tandem::kernels::internal {

// The product of rows [r0, r1) of W with n_tokens converted activation rows.
struct MatmulArgs {
  const uint8_t* w;  // row 0 of the weights
  size_t w_stride;   // bytes between weight rows
  const uint8_t* x;  // converted activations of token 0
  size_t x_stride;   // bytes between token rows of x
  int64_t n_cols;    // multiple of 32
  int64_t n_tokens;
  float* y;  // y[t * ldy + r]
  int64_t ldy;
};

using RowsKernel = void (*)(const MatmulArgs& args, int64_t r0, int64_t r1);
// Converts one f32 activation row into the activation format of the kernels.
using ConvertRow = void (*)(const float* x, void* dst, int64_t n);

// How one ISA computes the product for one weight type.
struct TypeKernels {
  RowsKernel rows = nullptr;
  ConvertRow convert = nullptr;  // nullptr: the portable conversion
  int64_t row_grain = 1;         // rows per tile: thread ranges are multiples of it
};

// Kernels per weight type; a null `rows` means the ISA falls back to portable.
struct KernelTable {
  TypeKernels f32, f16, bf16, q8_0, q4_0;
};

// Format of the converted activations, which is internal to the kernels:
//   F32 weights:  f32 (x itself, no conversion)
//   F16 weights:  f32 holding values rounded to fp16 (so kernels need no
//                 conversion per product, and the products equal ggml's)
//   BF16 weights: bf16
//   Q8_0/Q4_0:    BlockQ8_0 rows from quantize_row_q8_0_act
size_t activation_row_bytes(DType weight_type, int64_t n_cols);

// Portable conversions of one row (also the reference for SIMD conversions).
void convert_row_f16_rounded(const float* x, void* dst, int64_t n);
void convert_row_bf16(const float* x, void* dst, int64_t n);
void convert_row_q8_0(const float* x, void* dst, int64_t n);

// The activation conversion that matmul uses for this Isa and weight type
// (nullptr for F32, which reads x in place). Tests check that each SIMD
// conversion matches the portable one bit for bit.
ConvertRow activation_converter(Isa isa, DType weight_type);

const KernelTable& portable_kernels();
#if defined(TANDEM_KERNELS_X86)
const KernelTable& avx2_kernels();
// has_vnni / has_bf16: the AVX-512 extensions the CPU has besides F, BW, VL.
const KernelTable& avx512_kernels(bool has_vnni, bool has_bf16);
#endif
#if defined(TANDEM_KERNELS_NEON)
const KernelTable& neon_kernels();
#endif

}  // namespace tandem::kernels::internal
