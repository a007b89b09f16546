// Attention kernels for aarch64 NEON (part of the base architecture, as are
// the f16 <-> f32 conversions used here).
#include <arm_neon.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "runtime/kernels/cpu/attention_kernels.h"
#include "runtime/kernels/cpu/convert.h"

namespace tandem::kernels::internal {
namespace {

// exp(x) for x <= 0 (Cephes' expf polynomial, as in attention_avx2.cc).
float32x4_t exp_f32x4(float32x4_t x) {
  x = vmaxq_f32(x, vdupq_n_f32(-87.0f));
  float32x4_t fx = vfmaq_f32(vdupq_n_f32(0.5f), x, vdupq_n_f32(1.44269504088896341f));
  fx = vrndmq_f32(fx);
  x = vfmsq_f32(x, fx, vdupq_n_f32(0.693359375f));
  x = vfmsq_f32(x, fx, vdupq_n_f32(-2.12194440e-4f));
  float32x4_t y = vdupq_n_f32(1.9875691500e-4f);
  y = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), y, x);
  y = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), y, x);
  y = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), y, x);
  y = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), y, x);
  y = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), y, x);
  y = vfmaq_f32(vaddq_f32(x, vdupq_n_f32(1.0f)), y, vmulq_f32(x, x));
  const int32x4_t n = vaddq_s32(vcvtq_s32_f32(fx), vdupq_n_s32(127));
  return vmulq_f32(y, vreinterpretq_f32_s32(vshlq_n_s32(n, 23)));
}

void load_f16(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; i += 4) {
    vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(src + i))));
  }
}

void score_keys(const float* q, const float* k, int64_t n_keys, int64_t hd, float scale,
                float* s) {
  int64_t j = 0;
  for (; j + 4 <= n_keys; j += 4) {
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
    const float* kj = k + j * hd;
    for (int64_t d = 0; d < hd; d += 4) {
      const float32x4_t qv = vld1q_f32(q + d);
      a0 = vfmaq_f32(a0, qv, vld1q_f32(kj + d));
      a1 = vfmaq_f32(a1, qv, vld1q_f32(kj + hd + d));
      a2 = vfmaq_f32(a2, qv, vld1q_f32(kj + 2 * hd + d));
      a3 = vfmaq_f32(a3, qv, vld1q_f32(kj + 3 * hd + d));
    }
    const float32x4_t sums = vpaddq_f32(vpaddq_f32(a0, a1), vpaddq_f32(a2, a3));
    vst1q_f32(s + j, vmulq_n_f32(sums, scale));
  }
  for (; j < n_keys; ++j) {
    float32x4_t a = vdupq_n_f32(0.0f);
    for (int64_t d = 0; d < hd; d += 4) {
      a = vfmaq_f32(a, vld1q_f32(q + d), vld1q_f32(k + j * hd + d));
    }
    s[j] = vaddvq_f32(a) * scale;
  }
}

float exp_shift_sum(float* s, int64_t n, float m) {
  const float32x4_t vm = vdupq_n_f32(m);
  float32x4_t vsum = vdupq_n_f32(0.0f);
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const float32x4_t e = exp_f32x4(vsubq_f32(vld1q_f32(s + j), vm));
    vst1q_f32(s + j, e);
    vsum = vaddq_f32(vsum, e);
  }
  float sum = vaddvq_f32(vsum);
  for (; j < n; ++j) {
    s[j] = std::exp(s[j] - m);
    sum += s[j];
  }
  return sum;
}

void accumulate_values(float* acc, float alpha, const float* p, const float* v, int64_t n_keys,
                       int64_t hd) {
  int64_t d = 0;
  for (; d + 16 <= hd; d += 16) {
    float32x4_t a0 = vmulq_n_f32(vld1q_f32(acc + d), alpha);
    float32x4_t a1 = vmulq_n_f32(vld1q_f32(acc + d + 4), alpha);
    float32x4_t a2 = vmulq_n_f32(vld1q_f32(acc + d + 8), alpha);
    float32x4_t a3 = vmulq_n_f32(vld1q_f32(acc + d + 12), alpha);
    for (int64_t j = 0; j < n_keys; ++j) {
      const float* vj = v + j * hd + d;
      a0 = vfmaq_n_f32(a0, vld1q_f32(vj), p[j]);
      a1 = vfmaq_n_f32(a1, vld1q_f32(vj + 4), p[j]);
      a2 = vfmaq_n_f32(a2, vld1q_f32(vj + 8), p[j]);
      a3 = vfmaq_n_f32(a3, vld1q_f32(vj + 12), p[j]);
    }
    vst1q_f32(acc + d, a0);
    vst1q_f32(acc + d + 4, a1);
    vst1q_f32(acc + d + 8, a2);
    vst1q_f32(acc + d + 12, a3);
  }
  for (; d < hd; d += 4) {
    float32x4_t a = vmulq_n_f32(vld1q_f32(acc + d), alpha);
    for (int64_t j = 0; j < n_keys; ++j) a = vfmaq_n_f32(a, vld1q_f32(v + j * hd + d), p[j]);
    vst1q_f32(acc + d, a);
  }
}

#include "runtime/kernels/cpu/attention_rows.inc"
#include "runtime/kernels/cpu/attention_tile.inc"

// silu(g) * up as attention_avx2.cc's: e = exp(-|g|), sigmoid(g) = 1 / (1 + e)
// for g >= 0 and e / (1 + e) below.
void swiglu(float* gate, const float* up, int64_t n) {
  const float32x4_t one = vdupq_n_f32(1.0f);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t g = vld1q_f32(gate + i);
    const float32x4_t e = exp_f32x4(vnegq_f32(vabsq_f32(g)));
    const uint32x4_t negative = vcltzq_f32(g);
    const float32x4_t num = vbslq_f32(negative, e, one);
    const float32x4_t sig = vdivq_f32(num, vaddq_f32(one, e));
    vst1q_f32(gate + i, vmulq_f32(vmulq_f32(g, sig), vld1q_f32(up + i)));
  }
  for (; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void to_f16(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
  }
  for (; i < n; ++i) dst[i] = f32_to_fp16(src[i]);
}

}  // namespace

const AttentionKernels& neon_attention_kernels() {
  static const AttentionKernels kernels{&attend_tile, &to_f16, &swiglu};
  return kernels;
}

}  // namespace tandem::kernels::internal
