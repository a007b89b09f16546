// Scalar element conversions and row (de)quantization for the types the CPU
// kernels support (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q5_K,
// Q6_K). Conversions and dequantization reproduce llama.cpp/ggml bit for bit,
// so that files we write and logits we compute match theirs: the *_ref
// quantizers are those used to write model files (the K-quant ones are
// simpler than ggml's: see convert_quants.cc), and quantize_row_q8_0_act /
// quantize_row_q8_k are the quantizers ggml applies to activations.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "runtime/tensor/dtype.h"

namespace tandem::kernels {

float fp16_to_f32(uint16_t h);
uint16_t f32_to_fp16(float f);  // round to nearest even; every NaN becomes 0x7e00 | sign
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);  // round to nearest even; NaN kept, made quiet

// n is a multiple of 32 in all three.
void quantize_row_q8_0_ref(const float* x, BlockQ8_0* y, int64_t n);
void quantize_row_q4_0_ref(const float* x, BlockQ4_0* y, int64_t n);
void quantize_row_q8_0_act(const float* x, BlockQ8_0* y, int64_t n);
void quantize_row_q4_1_ref(const float* x, BlockQ4_1* y, int64_t n);
void quantize_row_q5_0_ref(const float* x, BlockQ5_0* y, int64_t n);

// n is a multiple of 256 in these.
void quantize_row_q4_k_ref(const float* x, BlockQ4_K* y, int64_t n);
void quantize_row_q5_k_ref(const float* x, BlockQ5_K* y, int64_t n);
void quantize_row_q6_k_ref(const float* x, BlockQ6_K* y, int64_t n);
// Activations of K-quant products, as ggml's quantize_row_q8_K_ref: every q
// in [-127, 127].
void quantize_row_q8_k(const float* x, BlockQ8_K* y, int64_t n);

// Dequantization of one row of n elements (a multiple of the block size).
void dequantize_row_q4_1(const BlockQ4_1* x, float* y, int64_t n);
void dequantize_row_q5_0(const BlockQ5_0* x, float* y, int64_t n);
void dequantize_row_q4_k(const BlockQ4_K* x, float* y, int64_t n);
void dequantize_row_q5_k(const BlockQ5_K* x, float* y, int64_t n);
void dequantize_row_q6_k(const BlockQ6_K* x, float* y, int64_t n);
void dequantize_row_q8_k(const BlockQ8_K* x, float* y, int64_t n);

// Converts n f32 values into a row of `type` (any type kernels_support, with
// the *_ref quantizers). Fails for other types or an n that is not a multiple
// of the type's block size.
absl::Status quantize_row(DType type, const float* x, void* dst, int64_t n);

// Expands a row of `type` into f32; the type must be supported and n a
// multiple of its block size (a bug otherwise).
void dequantize_row(DType type, const void* src, float* dst, int64_t n);

// True for exactly F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q5_K and Q6_K.
bool kernels_support(DType type);

}  // namespace tandem::kernels
