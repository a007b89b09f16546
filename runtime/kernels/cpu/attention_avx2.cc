// Attention kernels for AVX2 + FMA + F16C (this file alone is compiled with
// those flags; attention.cc calls it after cpuid says the CPU has them).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "runtime/kernels/cpu/attention_kernels.h"
#include "runtime/kernels/cpu/convert.h"

namespace tandem::kernels::internal {
namespace {

float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Lane j holds the sum of the lanes of a[j].
__m256 hsum8(const __m256 a[8]) {
  const __m256 t0 = _mm256_hadd_ps(a[0], a[1]);
  const __m256 t1 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 t2 = _mm256_hadd_ps(a[4], a[5]);
  const __m256 t3 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1);
  const __m256 u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// exp(x) for x <= 0 (Cephes' expf polynomial; relative error ~1e-7). Below
// -87 the result is 0 or a denormal: negligible in a softmax.
__m256 exp_ps(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i n = _mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127));
  return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(n, 23)));
}

void load_f16(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
}

void score_keys(const float* q, const float* k, int64_t n_keys, int64_t hd, float scale,
                float* s) {
  const __m256 vscale = _mm256_set1_ps(scale);
  int64_t j = 0;
  for (; j + 8 <= n_keys; j += 8) {
    // Eight named accumulators: GCC 12 keeps an array of them in memory.
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
           a7 = a0;
    const float* kj = k + j * hd;
    for (int64_t d = 0; d < hd; d += 8) {
      const __m256 qv = _mm256_loadu_ps(q + d);
      a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kj + d), a0);
      a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kj + hd + d), a1);
      a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kj + 2 * hd + d), a2);
      a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kj + 3 * hd + d), a3);
      a4 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kj + 4 * hd + d), a4);
      a5 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kj + 5 * hd + d), a5);
      a6 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kj + 6 * hd + d), a6);
      a7 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kj + 7 * hd + d), a7);
    }
    const __m256 acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
    _mm256_storeu_ps(s + j, _mm256_mul_ps(hsum8(acc), vscale));
  }
  for (; j < n_keys; ++j) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t d = 0; d < hd; d += 8) {
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(k + j * hd + d), acc);
    }
    s[j] = hsum(acc) * scale;
  }
}

float exp_shift_sum(float* s, int64_t n, float m) {
  const __m256 vm = _mm256_set1_ps(m);
  __m256 vsum = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
    _mm256_storeu_ps(s + j, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  float sum = hsum(vsum);
  for (; j < n; ++j) {
    s[j] = std::exp(s[j] - m);
    sum += s[j];
  }
  return sum;
}

void accumulate_values(float* acc, float alpha, const float* p, const float* v, int64_t n_keys,
                       int64_t hd) {
  const __m256 valpha = _mm256_set1_ps(alpha);
  int64_t d = 0;
  for (; d + 32 <= hd; d += 32) {
    __m256 a0 = _mm256_mul_ps(_mm256_loadu_ps(acc + d), valpha);
    __m256 a1 = _mm256_mul_ps(_mm256_loadu_ps(acc + d + 8), valpha);
    __m256 a2 = _mm256_mul_ps(_mm256_loadu_ps(acc + d + 16), valpha);
    __m256 a3 = _mm256_mul_ps(_mm256_loadu_ps(acc + d + 24), valpha);
    for (int64_t j = 0; j < n_keys; ++j) {
      const __m256 pj = _mm256_broadcast_ss(p + j);
      const float* vj = v + j * hd + d;
      a0 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj), a0);
      a1 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 8), a1);
      a2 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 16), a2);
      a3 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 24), a3);
    }
    _mm256_storeu_ps(acc + d, a0);
    _mm256_storeu_ps(acc + d + 8, a1);
    _mm256_storeu_ps(acc + d + 16, a2);
    _mm256_storeu_ps(acc + d + 24, a3);
  }
  for (; d < hd; d += 8) {
    __m256 a = _mm256_mul_ps(_mm256_loadu_ps(acc + d), valpha);
    for (int64_t j = 0; j < n_keys; ++j) {
      a = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j), _mm256_loadu_ps(v + j * hd + d), a);
    }
    _mm256_storeu_ps(acc + d, a);
  }
}

// Two rows of a group at a time: each key and value load feeds both.
void score_rows(const float* q, int64_t n_rows, const float* k, int64_t n_keys, int64_t hd,
                float scale, float* s, int64_t s_stride) {
  const __m256 vscale = _mm256_set1_ps(scale);
  int64_t g = 0;
  for (; g + 2 <= n_rows; g += 2) {
    const float* q0 = q + g * hd;
    const float* q1 = q0 + hd;
    float* s0 = s + g * s_stride;
    float* s1 = s0 + s_stride;
    int64_t j = 0;
    for (; j + 4 <= n_keys; j += 4) {
      // Rows x keys in eight named accumulators (see score_keys).
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0,
             b3 = a0;
      const float* kj = k + j * hd;
      for (int64_t d = 0; d < hd; d += 8) {
        const __m256 x0 = _mm256_loadu_ps(q0 + d);
        const __m256 x1 = _mm256_loadu_ps(q1 + d);
        const __m256 k0 = _mm256_loadu_ps(kj + d);
        const __m256 k1 = _mm256_loadu_ps(kj + hd + d);
        const __m256 k2 = _mm256_loadu_ps(kj + 2 * hd + d);
        const __m256 k3 = _mm256_loadu_ps(kj + 3 * hd + d);
        a0 = _mm256_fmadd_ps(x0, k0, a0);
        a1 = _mm256_fmadd_ps(x0, k1, a1);
        a2 = _mm256_fmadd_ps(x0, k2, a2);
        a3 = _mm256_fmadd_ps(x0, k3, a3);
        b0 = _mm256_fmadd_ps(x1, k0, b0);
        b1 = _mm256_fmadd_ps(x1, k1, b1);
        b2 = _mm256_fmadd_ps(x1, k2, b2);
        b3 = _mm256_fmadd_ps(x1, k3, b3);
      }
      const __m256 acc[8] = {a0, a1, a2, a3, b0, b1, b2, b3};
      const __m256 sums = _mm256_mul_ps(hsum8(acc), vscale);
      _mm_storeu_ps(s0 + j, _mm256_castps256_ps128(sums));
      _mm_storeu_ps(s1 + j, _mm256_extractf128_ps(sums, 1));
    }
    if (j < n_keys) {
      score_keys(q0, k + j * hd, n_keys - j, hd, scale, s0 + j);
      score_keys(q1, k + j * hd, n_keys - j, hd, scale, s1 + j);
    }
  }
  if (g < n_rows) score_keys(q + g * hd, k, n_keys, hd, scale, s + g * s_stride);
}

void accumulate_rows(float* acc, int64_t n_rows, const float* alpha, const float* p,
                     int64_t p_stride, const float* v, int64_t n_keys, int64_t hd) {
  int64_t g = 0;
  for (; g + 2 <= n_rows && hd % 32 == 0; g += 2) {
    float* c0 = acc + g * hd;
    float* c1 = c0 + hd;
    const float* p0 = p + g * p_stride;
    const float* p1 = p0 + p_stride;
    const __m256 al0 = _mm256_set1_ps(alpha[g]);
    const __m256 al1 = _mm256_set1_ps(alpha[g + 1]);
    for (int64_t d = 0; d < hd; d += 32) {
      __m256 a0 = _mm256_mul_ps(_mm256_loadu_ps(c0 + d), al0);
      __m256 a1 = _mm256_mul_ps(_mm256_loadu_ps(c0 + d + 8), al0);
      __m256 a2 = _mm256_mul_ps(_mm256_loadu_ps(c0 + d + 16), al0);
      __m256 a3 = _mm256_mul_ps(_mm256_loadu_ps(c0 + d + 24), al0);
      __m256 b0 = _mm256_mul_ps(_mm256_loadu_ps(c1 + d), al1);
      __m256 b1 = _mm256_mul_ps(_mm256_loadu_ps(c1 + d + 8), al1);
      __m256 b2 = _mm256_mul_ps(_mm256_loadu_ps(c1 + d + 16), al1);
      __m256 b3 = _mm256_mul_ps(_mm256_loadu_ps(c1 + d + 24), al1);
      for (int64_t j = 0; j < n_keys; ++j) {
        const __m256 x0 = _mm256_broadcast_ss(p0 + j);
        const __m256 x1 = _mm256_broadcast_ss(p1 + j);
        const float* vj = v + j * hd + d;
        const __m256 v0 = _mm256_loadu_ps(vj);
        const __m256 v1 = _mm256_loadu_ps(vj + 8);
        const __m256 v2 = _mm256_loadu_ps(vj + 16);
        const __m256 v3 = _mm256_loadu_ps(vj + 24);
        a0 = _mm256_fmadd_ps(x0, v0, a0);
        a1 = _mm256_fmadd_ps(x0, v1, a1);
        a2 = _mm256_fmadd_ps(x0, v2, a2);
        a3 = _mm256_fmadd_ps(x0, v3, a3);
        b0 = _mm256_fmadd_ps(x1, v0, b0);
        b1 = _mm256_fmadd_ps(x1, v1, b1);
        b2 = _mm256_fmadd_ps(x1, v2, b2);
        b3 = _mm256_fmadd_ps(x1, v3, b3);
      }
      _mm256_storeu_ps(c0 + d, a0);
      _mm256_storeu_ps(c0 + d + 8, a1);
      _mm256_storeu_ps(c0 + d + 16, a2);
      _mm256_storeu_ps(c0 + d + 24, a3);
      _mm256_storeu_ps(c1 + d, b0);
      _mm256_storeu_ps(c1 + d + 8, b1);
      _mm256_storeu_ps(c1 + d + 16, b2);
      _mm256_storeu_ps(c1 + d + 24, b3);
    }
  }
  for (; g < n_rows; ++g) {
    accumulate_values(acc + g * hd, alpha[g], p + g * p_stride, v, n_keys, hd);
  }
}

#include "runtime/kernels/cpu/attention_tile.inc"

// silu(g) * up with e = exp(-|g|) in (0, 1], inside exp_ps's domain:
// sigmoid(g) = 1 / (1 + e) for g >= 0 and e / (1 + e) below.
void swiglu(float* gate, const float* up, int64_t n) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 e = exp_ps(_mm256_or_ps(g, sign_bit));
    const __m256 num = _mm256_blendv_ps(one, e, g);  // g's sign bit picks e
    const __m256 sig = _mm256_div_ps(num, _mm256_add_ps(one, e));
    _mm256_storeu_ps(gate + i, _mm256_mul_ps(_mm256_mul_ps(g, sig), _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void to_f16(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h =
        _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  for (; i < n; ++i) dst[i] = f32_to_fp16(src[i]);
}

}  // namespace

const AttentionKernels& avx2_attention_kernels() {
  static const AttentionKernels kernels{&attend_tile, &to_f16, &swiglu};
  return kernels;
}

}  // namespace tandem::kernels::internal
