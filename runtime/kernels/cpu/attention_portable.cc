// Attention kernels in plain C++, for CPUs without the SIMD extensions of the
// other files (and as their reference in the tests).
#include <algorithm>
#include <cmath>
#include <limits>

#include "runtime/kernels/cpu/attention_kernels.h"
#include "runtime/kernels/cpu/convert.h"

namespace tandem::kernels::internal {
namespace {

void load_f16(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_f32(src[i]);
}

void score_keys(const float* q, const float* k, int64_t n_keys, int64_t hd, float scale,
                float* s) {
  for (int64_t j = 0; j < n_keys; ++j) {
    float dot = 0.0f;
    for (int64_t d = 0; d < hd; ++d) dot += q[d] * k[j * hd + d];
    s[j] = dot * scale;
  }
}

float exp_shift_sum(float* s, int64_t n, float m) {
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - m);
    sum += s[j];
  }
  return sum;
}

void accumulate_values(float* acc, float alpha, const float* p, const float* v, int64_t n_keys,
                       int64_t hd) {
  for (int64_t d = 0; d < hd; ++d) acc[d] *= alpha;
  for (int64_t j = 0; j < n_keys; ++j) {
    for (int64_t d = 0; d < hd; ++d) acc[d] += p[j] * v[j * hd + d];
  }
}

#include "runtime/kernels/cpu/attention_rows.inc"
#include "runtime/kernels/cpu/attention_tile.inc"

void to_f16(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_fp16(src[i]);
}

void swiglu(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

}  // namespace

const AttentionKernels& portable_attention_kernels() {
  static const AttentionKernels kernels{&attend_tile, &to_f16, &swiglu};
  return kernels;
}

}  // namespace tandem::kernels::internal
