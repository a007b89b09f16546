// Quantization and dequantization of Q4_1, Q5_0, the K-quants (Q4_K, Q5_K,
// Q6_K) and Q8_K, the activation format of K-quant products. Block layouts
// are described in runtime/tensor/dtype.h. Dequantization and the Q4_1, Q5_0
// and Q8_K quantizers follow ggml's arithmetic; the K-quant quantizers are
// simpler than ggml's (min/max per sub-block instead of its iterative
// search): good enough for test models, and their output is read correctly
// by any ggml implementation.

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/status.h"
#include "runtime/kernels/cpu/convert.h"

namespace tandem::kernels {
namespace {

constexpr int kQK = 32;

inline int nearest(float x) { return static_cast<int>(std::nearbyint(x)); }

// Round half to even for |x| < 2^22, as nearbyint in the default rounding
// mode, without the libm call: adding 1.5 * 2^23 leaves the rounded integer
// in the low mantissa bits (ggml's nearest_int).
inline int nearest_small(float x) {
  const float v = x + 12582912.0f;
  int32_t i;
  std::memcpy(&i, &v, sizeof(i));
  return (i & 0x007fffff) - 0x00400000;
}

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// The 6-bit scale and minimum of sub-block s of a Q4_K/Q5_K `scales` array.
void scale_min_k4(int s, const uint8_t* q, int& sc, int& m) {
  if (s < 4) {
    sc = q[s] & 63;
    m = q[s + 4] & 63;
  } else {
    sc = (q[s + 4] & 0x0F) | ((q[s - 4] >> 6) << 4);
    m = (q[s + 4] >> 4) | ((q[s] >> 6) << 4);
  }
}

// Packs eight 6-bit scales and minima the way scale_min_k4 reads them.
void pack_scales_k4(const int* sc, const int* m, uint8_t* q) {
  std::memset(q, 0, 12);
  for (int s = 0; s < 8; ++s) {
    if (s < 4) {
      q[s] = static_cast<uint8_t>(sc[s]);
      q[s + 4] = static_cast<uint8_t>(m[s]);
    } else {
      q[s + 4] = static_cast<uint8_t>((sc[s] & 0x0F) | ((m[s] & 0x0F) << 4));
      q[s - 4] |= static_cast<uint8_t>((sc[s] >> 4) << 6);
      q[s] |= static_cast<uint8_t>((m[s] >> 4) << 6);
    }
  }
}

// Quantizes one 256-element super-block to q[i] in [0, n_levels] with
// x ~= d * sc[s] * q - dmin * m[s] over 8 sub-blocks of 32: each sub-block
// spans [min(0, lo), hi], and the sub-block scales and minima are then
// quantized to 6 bits against the super-block's largest.
void quantize_super_block_k(const float* x, int n_levels, uint16_t& d_out, uint16_t& dmin_out,
                            uint8_t* scales, uint8_t* q) {
  float scale[8], min[8];
  float max_scale = 0.0f, max_min = 0.0f;
  for (int s = 0; s < 8; ++s) {
    float lo = 0.0f, hi = 0.0f;
    for (int l = 0; l < kQK; ++l) {
      lo = std::min(lo, x[kQK * s + l]);
      hi = std::max(hi, x[kQK * s + l]);
    }
    scale[s] = (hi - lo) / static_cast<float>(n_levels);
    min[s] = -lo;
    max_scale = std::max(max_scale, scale[s]);
    max_min = std::max(max_min, min[s]);
  }
  d_out = f32_to_fp16(max_scale / 63.0f);
  dmin_out = f32_to_fp16(max_min / 63.0f);
  const float d = fp16_to_f32(d_out);
  const float dmin = fp16_to_f32(dmin_out);
  int ls[8], lm[8];
  for (int s = 0; s < 8; ++s) {
    ls[s] = d > 0.0f ? std::clamp(nearest(scale[s] / d), 0, 63) : 0;
    lm[s] = dmin > 0.0f ? std::clamp(nearest(min[s] / dmin), 0, 63) : 0;
    const float sc = d * static_cast<float>(ls[s]);
    const float m = dmin * static_cast<float>(lm[s]);
    for (int l = 0; l < kQK; ++l) {
      const int v = sc > 0.0f ? nearest((x[kQK * s + l] + m) / sc) : 0;
      q[kQK * s + l] = static_cast<uint8_t>(std::clamp(v, 0, n_levels));
    }
  }
  pack_scales_k4(ls, lm, scales);
}

}  // namespace

void quantize_row_q4_1_ref(const float* x, BlockQ4_1* y, int64_t n) {
  TANDEM_CHECK(n % kQK == 0);
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float* xb = x + i * kQK;
    float lo = xb[0], hi = xb[0];
    for (int j = 1; j < kQK; ++j) {
      lo = std::min(lo, xb[j]);
      hi = std::max(hi, xb[j]);
    }
    const float d = (hi - lo) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_fp16(d);
    y[i].m = f32_to_fp16(lo);
    for (int j = 0; j < kQK / 2; ++j) {
      const auto q0 = std::min<uint8_t>(15, static_cast<uint8_t>((xb[j] - lo) * id + 0.5f));
      const auto q1 =
          std::min<uint8_t>(15, static_cast<uint8_t>((xb[kQK / 2 + j] - lo) * id + 0.5f));
      y[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void quantize_row_q5_0_ref(const float* x, BlockQ5_0* y, int64_t n) {
  TANDEM_CHECK(n % kQK == 0);
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float* xb = x + i * kQK;
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQK; ++j) {
      if (amax < std::fabs(xb[j])) {
        amax = std::fabs(xb[j]);
        max = xb[j];
      }
    }
    const float d = max / -16;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_fp16(d);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const auto q0 = std::min<uint8_t>(31, static_cast<uint8_t>(xb[j] * id + 16.5f));
      const auto q1 = std::min<uint8_t>(31, static_cast<uint8_t>(xb[kQK / 2 + j] * id + 16.5f));
      y[i].qs[j] = static_cast<uint8_t>((q0 & 0x0F) | ((q1 & 0x0F) << 4));
      qh |= static_cast<uint32_t>(q0 >> 4) << j;
      qh |= static_cast<uint32_t>(q1 >> 4) << (j + kQK / 2);
    }
    std::memcpy(y[i].qh, &qh, sizeof(qh));
  }
}

void quantize_row_q4_k_ref(const float* x, BlockQ4_K* y, int64_t n) {
  TANDEM_CHECK(n % kQK_K == 0);
  uint8_t q[kQK_K];
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    quantize_super_block_k(x + i * kQK_K, 15, y[i].d, y[i].dmin, y[i].scales, q);
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        y[i].qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
      }
    }
  }
}

void quantize_row_q5_k_ref(const float* x, BlockQ5_K* y, int64_t n) {
  TANDEM_CHECK(n % kQK_K == 0);
  uint8_t q[kQK_K];
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    quantize_super_block_k(x + i * kQK_K, 31, y[i].d, y[i].dmin, y[i].scales, q);
    std::memset(y[i].qh, 0, sizeof(y[i].qh));
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const int lo = q[64 * c + l];
        const int hi = q[64 * c + 32 + l];
        y[i].qs[32 * c + l] = static_cast<uint8_t>((lo & 0x0F) | ((hi & 0x0F) << 4));
        y[i].qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
    }
  }
}

void quantize_row_q6_k_ref(const float* x, BlockQ6_K* y, int64_t n) {
  TANDEM_CHECK(n % kQK_K == 0);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float* xb = x + i * kQK_K;
    // Per 16 elements, a scale that maps the largest |x| to -32 (as Q4_0
    // maps it to -8), then the scales to int8 against the largest.
    float scale[16];
    float amax_scale = 0.0f;
    for (int s = 0; s < 16; ++s) {
      float amax = 0.0f, max = 0.0f;
      for (int l = 0; l < 16; ++l) {
        if (amax < std::fabs(xb[16 * s + l])) {
          amax = std::fabs(xb[16 * s + l]);
          max = xb[16 * s + l];
        }
      }
      scale[s] = max / -32.0f;
      amax_scale = std::max(amax_scale, std::fabs(scale[s]));
    }
    y[i].d = f32_to_fp16(amax_scale / 127.0f);
    const float d = fp16_to_f32(y[i].d);
    uint8_t q[kQK_K];
    for (int s = 0; s < 16; ++s) {
      const int ls = d > 0.0f ? std::clamp(nearest(scale[s] / d), -127, 127) : 0;
      y[i].scales[s] = static_cast<int8_t>(ls);
      const float sc = d * static_cast<float>(ls);
      for (int l = 0; l < 16; ++l) {
        const int v = sc != 0.0f ? nearest(xb[16 * s + l] / sc) : 0;
        q[16 * s + l] = static_cast<uint8_t>(std::clamp(v, -32, 31) + 32);
      }
    }
    std::memset(y[i].ql, 0, sizeof(y[i].ql));
    std::memset(y[i].qh, 0, sizeof(y[i].qh));
    for (int h = 0; h < 2; ++h) {
      for (int k = 0; k < 4; ++k) {
        for (int l = 0; l < 32; ++l) {
          const int v = q[128 * h + 32 * k + l];
          y[i].ql[64 * h + l + 32 * (k & 1)] |= static_cast<uint8_t>((v & 0x0F) << (k < 2 ? 0 : 4));
          y[i].qh[32 * h + l] |= static_cast<uint8_t>((v >> 4) << (2 * k));
        }
      }
    }
  }
}

void quantize_row_q8_k(const float* x, BlockQ8_K* y, int64_t n) {
  TANDEM_CHECK(n % kQK_K == 0);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float* xb = x + i * kQK_K;
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQK_K; ++j) {
      if (amax < std::fabs(xb[j])) {
        amax = std::fabs(xb[j]);
        max = xb[j];
      }
    }
    if (amax == 0.0f) {
      std::memset(&y[i], 0, sizeof(y[i]));
      continue;
    }
    // ggml maps the element of largest magnitude to -127, so every q lies
    // in [-127, 127]: the kernels rely on never seeing -128.
    const float iscale = -127.0f / max;
    for (int j = 0; j < kQK_K; ++j) {
      y[i].qs[j] = static_cast<int8_t>(std::min(127, nearest_small(iscale * xb[j])));
    }
    for (int g = 0; g < kQK_K / 16; ++g) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += y[i].qs[16 * g + l];
      y[i].bsums[g] = static_cast<int16_t>(sum);
    }
    y[i].d = 1.0f / iscale;
  }
}

void dequantize_row_q4_1(const BlockQ4_1* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float d = fp16_to_f32(b[i].d);
    const float m = fp16_to_f32(b[i].m);
    for (int j = 0; j < kQK / 2; ++j) {
      y[i * kQK + j] = static_cast<float>(b[i].qs[j] & 0x0F) * d + m;
      y[i * kQK + kQK / 2 + j] = static_cast<float>(b[i].qs[j] >> 4) * d + m;
    }
  }
}

void dequantize_row_q5_0(const BlockQ5_0* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float d = fp16_to_f32(b[i].d);
    const uint32_t qh = load_u32(b[i].qh);
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = (b[i].qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1) << 4);
      const int q1 = (b[i].qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1) << 4);
      y[i * kQK + j] = static_cast<float>(q0 - 16) * d;
      y[i * kQK + kQK / 2 + j] = static_cast<float>(q1 - 16) * d;
    }
  }
}

void dequantize_row_q4_k(const BlockQ4_K* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = fp16_to_f32(b[i].d);
    const float dmin = fp16_to_f32(b[i].dmin);
    for (int c = 0; c < 4; ++c) {
      int sc0, m0, sc1, m1;
      scale_min_k4(2 * c, b[i].scales, sc0, m0);
      scale_min_k4(2 * c + 1, b[i].scales, sc1, m1);
      const float d0 = d * static_cast<float>(sc0), mm0 = dmin * static_cast<float>(m0);
      const float d1 = d * static_cast<float>(sc1), mm1 = dmin * static_cast<float>(m1);
      float* out = y + i * kQK_K + 64 * c;
      for (int l = 0; l < 32; ++l) {
        out[l] = d0 * static_cast<float>(b[i].qs[32 * c + l] & 0x0F) - mm0;
        out[32 + l] = d1 * static_cast<float>(b[i].qs[32 * c + l] >> 4) - mm1;
      }
    }
  }
}

void dequantize_row_q5_k(const BlockQ5_K* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = fp16_to_f32(b[i].d);
    const float dmin = fp16_to_f32(b[i].dmin);
    for (int c = 0; c < 4; ++c) {
      int sc0, m0, sc1, m1;
      scale_min_k4(2 * c, b[i].scales, sc0, m0);
      scale_min_k4(2 * c + 1, b[i].scales, sc1, m1);
      const float d0 = d * static_cast<float>(sc0), mm0 = dmin * static_cast<float>(m0);
      const float d1 = d * static_cast<float>(sc1), mm1 = dmin * static_cast<float>(m1);
      float* out = y + i * kQK_K + 64 * c;
      for (int l = 0; l < 32; ++l) {
        const uint8_t ql = b[i].qs[32 * c + l];
        const uint8_t qh = b[i].qh[l];
        const int q0 = (ql & 0x0F) | (((qh >> (2 * c)) & 1) << 4);
        const int q1 = (ql >> 4) | (((qh >> (2 * c + 1)) & 1) << 4);
        out[l] = d0 * static_cast<float>(q0) - mm0;
        out[32 + l] = d1 * static_cast<float>(q1) - mm1;
      }
    }
  }
}

void dequantize_row_q6_k(const BlockQ6_K* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = fp16_to_f32(b[i].d);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = b[i].ql + 64 * h;
      const uint8_t* qh = b[i].qh + 32 * h;
      for (int k = 0; k < 4; ++k) {
        for (int l = 0; l < 32; ++l) {
          const uint8_t lo = ql[l + 32 * (k & 1)];
          const int q = ((k < 2 ? lo & 0x0F : lo >> 4) | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
          const int e = 128 * h + 32 * k + l;
          y[i * kQK_K + e] = d * static_cast<float>(b[i].scales[e / 16]) * static_cast<float>(q);
        }
      }
    }
  }
}

void dequantize_row_q8_k(const BlockQ8_K* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    for (int j = 0; j < kQK_K; ++j) y[i * kQK_K + j] = b[i].d * static_cast<float>(b[i].qs[j]);
  }
}

}  // namespace tandem::kernels
