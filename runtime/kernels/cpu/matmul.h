// Matrix-vector and matrix-matrix products of weight matrices (any supported
// type) with f32 activations: the hot path of CPU inference. Activations are
// first converted to the weight's "vec_dot type" exactly as llama.cpp does
// (Q8_0 for quantized weights, fp16 for F16, bf16 for BF16), so our logits
// track theirs. One implementation per instruction set (portable scalar, AVX2,
// AVX-512, NEON) is chosen at run time; every one is compared with the
// double-precision reference in tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "runtime/kernels/cpu/thread_pool.h"
#include "runtime/tensor/dtype.h"

namespace tandem::kernels {

enum class Isa { kPortable, kAvx2, kAvx512, kNeon };

std::string_view isa_name(Isa isa);

// The fastest Isa this build and CPU can run (AVX-512 needs F, BW and VL;
// AVX2 needs AVX2, FMA and F16C). TANDEM_ISA=portable|avx2|avx512|neon in the
// environment can lower it, never raise it. Read once, then cached.
Isa best_isa();

// Every Isa this build and CPU can run, portable first.
std::vector<Isa> available_isas();

// How a matrix's bytes are arranged.
enum class Layout {
  // [n_rows][n_cols] as in GGUF: each row is row_bytes(type, n_cols) bytes and
  // rows are contiguous.
  kRowMajor,
  // Q8_0, Q4_0, Q4_1, Q5_0 and the K-quants only, made by pack(): groups of kPackRows
  // rows, each group one contiguous stream in which a block column of all
  // its rows sits together, so one-token products read sequential streams
  // and reuse every activation block for 16 rows. The format is internal to the
  // kernels (matmul_kernels.h describes it); only matmul reads it.
  kPacked,
};

inline constexpr int64_t kPackRows = 16;

struct Matrix {
  DType type;
  const void* data;
  int64_t n_rows;
  int64_t n_cols;
  Layout layout = Layout::kRowMajor;
};

// Whether pack() handles this type (Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q5_K and Q6_K).
bool pack_supported(DType type);

// Whether matmul on `isa` is faster with packed matrices of this type: true
// where that ISA has a packed kernel (AVX2 and AVX-512), so a loader can
// leave weights as they are elsewhere. Implies pack_supported.
bool pack_preferred(DType type, Isa isa = best_isa());

// Bytes of the packed form of a row-major [n_rows][n_cols] matrix: the
// row-major size with n_rows rounded up to a multiple of kPackRows.
size_t packed_bytes(DType type, int64_t n_rows, int64_t n_cols);

// Writes the packed form of the row-major `in` (pack_supported(in.type),
// n_cols a multiple of its block size) to `out`, packed_bytes() long. `out` may be
// in.data itself (in-place packing of a buffer of packed_bytes()); otherwise
// the two must not overlap. Returns the packed Matrix over `out`. With a
// pool, its threads pack the row groups side by side (packing a K-quant is
// scalar work, under 1 GB/s per core: a loader wants every core on it).
Matrix pack(const Matrix& in, void* out, ThreadPool* pool = nullptr);

// The type the activations are converted to before the products, as
// llama.cpp's vec_dot_type: F32->F32, F16->F16, BF16->BF16, Q8_0->Q8_0,
// Q4_0->Q8_0 (with quantize_row_q8_0_act).
DType activation_type(DType weight_type);

// Bytes of scratch that matmul needs for these shapes.
size_t matmul_scratch_bytes(DType weight_type, int64_t n_cols, int64_t n_tokens);

// y[t*ldy + r] = sum_c W[r][c] * x[t*ldx + c] for t < n_tokens, r < n_rows.
// Converts x once into `scratch` (at least matmul_scratch_bytes), then splits
// the rows over the pool. Allocates nothing. n_cols must be a multiple of 32,
// the type supported and `isa` available; y must not overlap x or scratch.
void matmul(const Matrix& w, const float* x, int64_t ldx, int64_t n_tokens, float* y, int64_t ldy,
            std::span<uint8_t> scratch, ThreadPool& pool, Isa isa = best_isa());

}  // namespace tandem::kernels
