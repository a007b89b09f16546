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
  // Packed weights only: the BlockSum array of each activation row starts at
  // this byte offset in the row.
  size_t x_sums_offset;
};

using RowsKernel = void (*)(const MatmulArgs& args, int64_t r0, int64_t r1);
// Converts one f32 activation row into the activation format of the kernels.
using ConvertRow = void (*)(const float* x, void* dst, int64_t n);

// How one ISA computes the product for one weight type.
struct TypeKernels {
  RowsKernel rows = nullptr;
  ConvertRow convert = nullptr;  // nullptr: the portable conversion
  int64_t row_grain = 1;         // rows per tile: thread ranges are multiples of it
  // Layout::kPacked weights; nullptr: the portable one. Rows are
  // handed out in whole groups (r0 a multiple of kPackRows; r1 too, or
  // n_rows), and a.w_stride is the size of one group.
  RowsKernel packed_rows = nullptr;
};

// Packed Q8_0/Q4_0/Q4_1/Q5_0 (Layout::kPacked). Rows are taken in groups of
// kPackRows = 16, the last one padded with zero rows. With nb = n_cols / 32,
// group g is packed_group_bytes long at g * packed_group_bytes and holds
//   scales: nb x 16 fp16, the scales of block column b for rows 0..15;
//           for Q4_1 then nb x 16 fp16 minima in the same order;
//   quants: nb x packed_block_bytes(type). For Q8_0, Q4_0 and Q4_1, block
//           column b is kPackedSlabs slabs of 64 bytes; bytes 4i..4i+3 of
//           slab k are the qs bytes 4k..4k+3 of row i. For Q8_0 (8 slabs)
//           those are the weights of columns 4k..4k+3; for Q4_0 and Q4_1 (4
//           slabs) the low nibbles are columns 4k..4k+3 and the high nibbles
//           columns 16+4k..19+4k. Q5_0's block column is a packed Q5_K
//           sub-block (below) over the same columns.
// A SIMD lane of 4 bytes therefore holds one row, and one broadcast of 4
// activation bytes feeds all 16 rows: no horizontal sums, and the int32 sums
// stay exact per block as in ggml. The group is one sequential stream, and
// its size equals 16 row-major rows, which lets pack() work in place.
inline constexpr int kPackedSlabsQ8_0 = 8;
inline constexpr int kPackedSlabsQ4_0 = 4;
inline constexpr size_t kPackedQ5_0Bytes = 4 * 64 + 64;  // 4 slabs, then the top bits
// The bytes of one packed block column of a Q8_0/Q4_0/Q4_1/Q5_0 group.
size_t packed_block_bytes(DType type);
size_t packed_group_bytes(DType type, int64_t n_cols);

// Packed Q4_K: groups of 16 rows as above, each a sequence of n_cols / 256
// packed super-blocks of kPackedQ4KBytes (= 16 x 144, so packing works in
// place). Super-block b of the group's rows 0..15 becomes, with the 6-bit
// scale sc and minimum m of row r, sub-block s (see BlockQ4_K):
//   [0, 32)     d of rows 0..15 (fp16)
//   [32, 64)    dmin of rows 0..15 (fp16)
//   [64, 192)   byte 64h + 8s + i: sc | (m & 3) << 6 of row 8h + i
//   [192, 256)  byte 32h + p: low nibble m >> 2 of the row and sub-block of
//               position p (< 32) in the block above, high nibble that of p + 32
//   [256, 2304) sub-block s at 256 + 256s in the Q4_0 packed form: 4 slabs of
//               64 bytes; bytes 4i..4i+3 of slab k hold row i's elements
//               32s + 4k..4k+3 (low nibbles) and 32s + 16 + 4k.. (high)
// so that 8 rows (h = 0, 1) take one 32-byte half of each slab, and the
// scales of 8 rows and 8 sub-blocks decode with a few byte operations.
inline constexpr size_t kPackedQ4KBytes = 16 * 144;
// Packed Q5_K: packed Q4_K's first 256 bytes, then sub-block s at 256 + 320s
// (kPackedQ5KSubBytes, so that a group stays one sequential stream): 4 slabs
// of 64 bytes, then 64 bytes of top bits. A slab's byte holds the 5-bit
// quant of the element that Q4_K's low nibble holds at bits 0..4, and the
// low 3 bits of the high nibble's element at bits 5..7; the top-bit bytes
// (32 per half h) hold at bits 2k, 2k + 1 of byte p (< 32) the two top
// bits of the high element of byte 32h + p of slab k. The low quant then
// takes one mask, and the high one a shift and a mask plus a shift and a
// mask of its top bits.
inline constexpr size_t kPackedQ5KBytes = 16 * 176;
inline constexpr size_t kPackedQ5KSubBytes = 320;
// Bytes from the start of a packed Q4_K/Q5_K super-block to sub-block s.
inline constexpr size_t packed_k_subblock(bool five, int s) {
  return 256 + (five ? kPackedQ5KSubBytes : 256) * static_cast<size_t>(s);
}
static_assert(packed_k_subblock(false, 8) == kPackedQ4KBytes);
static_assert(packed_k_subblock(true, 8) == kPackedQ5KBytes);

// Packed Q6_K: as packed Q4_K, super-blocks of kPackedQ6KBytes = 16 x 210:
//   [0, 32)      d of rows 0..15 (fp16)
//   [32, 288)    byte 128h + 8s + i: the int8 scale of sub-block s (16
//                elements) of row 8h + i
//   [288, 3360)  sub-block s at 288 + 192s: three slabs of 64 bytes whose
//                bytes 4i + j hold row i's 6-bit quants of elements 16s + j
//                (slab 0), 16s + 4 + j (slab 1) and 16s + 12 + j (slab 2) at
//                bits 0..5, and at bits 6, 7 bits 2k, 2k + 1 of the quant of
//                element 16s + 8 + j (slab k). Three quants then take a mask
//                each, the fourth three shifts and masks.
inline constexpr size_t kPackedQ6KBytes = 16 * 210;

// Per activation block, for the packed kernels: the scale as f32 and
// -offset * sum(qs) with the weights' unsigned offset (128 for Q8_0, 8 for
// Q4_0, 16 for Q5_0), which seeds the int32 sums of unsigned-by-signed products
// (vpdpbusd, maddubs) so that they come out as signed-by-signed sums; and
// d * bias, which a batch kernel can add in float instead (one fused
// multiply-add rather than an integer add and a multiply per 8 rows).
struct BlockSum {
  float d;
  int32_t bias;
  float d_bias;
};

// Kernels per weight type; a null `rows` means the ISA falls back to portable.
struct KernelTable {
  TypeKernels f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q4_k, q5_k, q6_k;
};

// Format of the converted activations, which is internal to the kernels:
//   F32 weights:  f32 (x itself, no conversion)
//   F16 weights:  f32 holding values rounded to fp16 (so kernels need no
//                 conversion per product, and the products equal ggml's)
//   BF16 weights: bf16
//   Q8_0, Q4_0, Q4_1, Q5_0:
//                 BlockQ8_0 rows from quantize_row_q8_0_act, padded to 64
//                 bytes, then n_cols / 32 BlockSum (written by matmul for
//                 packed Q8_0, Q4_0 and Q5_0, and for Q4_1, whose minimum
//                 multiplies sum(qs): there bias = +sum(qs))
//   Q4_K, Q5_K, Q6_K: BlockQ8_K rows from quantize_row_q8_k
size_t activation_row_bytes(DType weight_type, int64_t n_cols);
// Where the BlockSum array starts in a Q8_0-based activation row.
size_t activation_sums_offset(int64_t n_cols);

// Portable conversions of one row (also the reference for SIMD conversions).
void convert_row_f16_rounded(const float* x, void* dst, int64_t n);
void convert_row_bf16(const float* x, void* dst, int64_t n);
void convert_row_q8_0(const float* x, void* dst, int64_t n);
void convert_row_q8_k(const float* x, void* dst, int64_t n);

// The activation conversion that matmul uses for this Isa and weight type
// (nullptr for F32, which reads x in place). Tests check that each SIMD
// conversion matches the portable one bit for bit.
ConvertRow activation_converter(Isa isa, DType weight_type);

const KernelTable& portable_kernels();
#if defined(TANDEM_KERNELS_X86)
const KernelTable& avx2_kernels();
// Fills in Q4_1, Q4_K, Q5_K and Q6_K (matmul_avx2_quants.cc); t.q8_0 must be set.
void add_avx2_quant_kernels(KernelTable& t);
// Adds the packed Q4_K and Q6_K kernels (matmul_avx2_packed_kquants.cc).
void add_avx2_packed_kquant_kernels(KernelTable& t);
// has_vnni / has_bf16: the AVX-512 extensions the CPU has besides F, BW, VL.
const KernelTable& avx512_kernels(bool has_vnni, bool has_bf16);
#endif
#if defined(TANDEM_KERNELS_NEON)
const KernelTable& neon_kernels();
// Fills in Q4_1, Q4_K, Q5_K and Q6_K (matmul_neon_quants.cc).
void add_neon_quant_kernels(KernelTable& t);
#endif

}  // namespace tandem::kernels::internal
