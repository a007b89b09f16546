// The element-wise pieces of a transformer layer, computed as llama.cpp
// computes them (RMSNorm sums in double, RoPE angles by repeated scaling).
#pragma once

#include <cstdint>
#include <span>

namespace tandem::model {

// out = x / sqrt(mean(x^2) + eps) * weight, for one row of n.
void rms_norm(const float* x, const float* weight, float eps, int64_t n, float* out);

// RoPE angles of one position, as ggml's rope cache: cos_sin[2i] = cos, [2i+1] = sin
// of pos * freq_scale * base^(-2i/rope_dim) / freq_factors[i], for i < rope_dim / 2.
void rope_angles(int32_t pos, int64_t rope_dim, float freq_base, float freq_scale,
                 std::span<const float> freq_factors, float* cos_sin);

// Rotates adjacent pairs (x[2i], x[2i+1]) of every head (normal mode) in place.
void rope_apply(float* x, int64_t n_heads, int64_t head_dim, int64_t rope_dim,
                const float* cos_sin);

// x[i] += y[i]
void add_in_place(float* x, const float* y, int64_t n);

}  // namespace tandem::model
