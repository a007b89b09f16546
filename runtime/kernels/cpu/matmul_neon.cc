// NEON kernels for aarch64 (NEON is part of the base architecture). The int8
// dot products use vdotq_s32 when the target has the dot-product extension
// (-march=armv8.2-a+dotprod) and widening multiplies otherwise.

#include <arm_neon.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "runtime/kernels/cpu/matmul_kernels.h"

namespace tandem::kernels::internal {
namespace {

#include "runtime/kernels/cpu/tile_driver.inc"

inline int32x4_t dot_i8(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
  return vdotq_s32(acc, a, b);
#else
  const int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
  const int16x8_t hi = vmull_s8(vget_high_s8(a), vget_high_s8(b));
  return vpadalq_s16(vpadalq_s16(acc, lo), hi);
#endif
}

inline float half_to_float(uint16_t h) {
  __fp16 v;
  std::memcpy(&v, &h, sizeof(v));
  return static_cast<float>(v);
}

template <class Block>
inline const Block* block_row(const uint8_t* base, size_t stride, int64_t i) {
  return reinterpret_cast<const Block*>(base + i * stride);
}

struct Quants {
  int8x16_t lo, hi;  // elements 0..15 and 16..31
};
inline Quants load_weights(const BlockQ8_0& b) { return {vld1q_s8(b.qs), vld1q_s8(b.qs + 16)}; }
inline Quants load_weights(const BlockQ4_0& b) {
  const uint8x16_t packed = vld1q_u8(b.qs);
  const int8x16_t eight = vdupq_n_s8(8);
  return {vsubq_s8(vreinterpretq_s8_u8(vandq_u8(packed, vdupq_n_u8(0x0F))), eight),
          vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(packed, 4)), eight)};
}

// q5_0: the nibbles as q4_0 plus bit j of qh as the fifth bit of element j
// (vtst against one bit per lane), minus 16.
inline Quants load_weights(const BlockQ5_0& b) {
  uint32_t qh;
  std::memcpy(&qh, b.qh, sizeof(qh));
  static constexpr uint8_t kBits[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t bits = vld1q_u8(kBits);
  const uint8x16_t bit5 = vdupq_n_u8(0x10);
  const uint8x16_t h_lo = vandq_u8(
      vtstq_u8(vcombine_u8(vdup_n_u8(qh & 0xFF), vdup_n_u8((qh >> 8) & 0xFF)), bits), bit5);
  const uint8x16_t h_hi = vandq_u8(
      vtstq_u8(vcombine_u8(vdup_n_u8((qh >> 16) & 0xFF), vdup_n_u8(qh >> 24)), bits), bit5);
  const uint8x16_t packed = vld1q_u8(b.qs);
  const int8x16_t sixteen = vdupq_n_s8(16);
  return {vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vandq_u8(packed, vdupq_n_u8(0x0F)), h_lo)), sixteen),
          vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(packed, 4), h_hi)), sixteen)};
}

template <class WBlock>
struct QuantKernel {
  template <int R, int T>
  static void tile(const MatmulArgs& a, int64_t r, int64_t t) {
    const int64_t nb = a.n_cols / 32;
    const WBlock* w[R];
    const BlockQ8_0* x[T];
    for (int i = 0; i < R; ++i) w[i] = block_row<WBlock>(a.w, a.w_stride, r + i);
    for (int j = 0; j < T; ++j) x[j] = block_row<BlockQ8_0>(a.x, a.x_stride, t + j);
    float32x4_t acc[R][T];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) acc[i][j] = vdupq_n_f32(0.0f);
    }
    for (int64_t b = 0; b < nb; ++b) {
      Quants xq[T];
      float dx[T];
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) {
        xq[j] = {vld1q_s8(x[j][b].qs), vld1q_s8(x[j][b].qs + 16)};
        dx[j] = half_to_float(x[j][b].d);
      }
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const Quants wq = load_weights(w[i][b]);
        const float dw = half_to_float(w[i][b].d);
#pragma GCC unroll 16
        for (int j = 0; j < T; ++j) {
          const int32x4_t dot = dot_i8(dot_i8(vdupq_n_s32(0), wq.lo, xq[j].lo), wq.hi, xq[j].hi);
          acc[i][j] = vfmaq_n_f32(acc[i][j], vcvtq_f32_s32(dot), dw * dx[j]);
        }
      }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) a.y[(t + j) * a.ldy + r + i] = vaddvq_f32(acc[i][j]);
    }
  }
};

struct LoadF32 {
  static float32x4_t load(const uint8_t* row, int64_t c) {
    return vld1q_f32(reinterpret_cast<const float*>(row) + c);
  }
};
struct LoadF16 {
  static float32x4_t load(const uint8_t* row, int64_t c) {
    const uint16x4_t h = vld1_u16(reinterpret_cast<const uint16_t*>(row) + c);
    return vcvt_f32_f16(vreinterpret_f16_u16(h));
  }
};
struct LoadBF16 {
  static float32x4_t load(const uint8_t* row, int64_t c) {
    const uint16x4_t h = vld1_u16(reinterpret_cast<const uint16_t*>(row) + c);
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
  }
};

// 4 columns per step; one-token tiles keep four chains per output.
template <class WLoad, class XLoad>
struct FloatKernel {
  template <int R, int T>
  static void tile(const MatmulArgs& a, int64_t r, int64_t t) {
    constexpr int U = T == 1 ? 4 : 1;
    const uint8_t* w[R];
    const uint8_t* x[T];
    for (int i = 0; i < R; ++i) w[i] = a.w + (r + i) * a.w_stride;
    for (int j = 0; j < T; ++j) x[j] = a.x + (t + j) * a.x_stride;
    float32x4_t acc[R][T][U];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) {
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) acc[i][j][u] = vdupq_n_f32(0.0f);
      }
    }
    for (int64_t c = 0; c < a.n_cols; c += 4 * U) {
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) {
        float32x4_t xv[T];
#pragma GCC unroll 16
        for (int j = 0; j < T; ++j) xv[j] = XLoad::load(x[j], c + 4 * u);
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i) {
          const float32x4_t wv = WLoad::load(w[i], c + 4 * u);
#pragma GCC unroll 16
          for (int j = 0; j < T; ++j) acc[i][j][u] = vfmaq_f32(acc[i][j][u], wv, xv[j]);
        }
      }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) {
        float32x4_t s = acc[i][j][0];
#pragma GCC unroll 4
        for (int u = 1; u < U; ++u) s = vaddq_f32(s, acc[i][j][u]);
        a.y[(t + j) * a.ldy + r + i] = vaddvq_f32(s);
      }
    }
  }
};

}  // namespace

const KernelTable& neon_kernels() {
  static const KernelTable table = [] {
    KernelTable t;
    t.f32 = {rows_kernel<FloatKernel<LoadF32, LoadF32>, 4, 4, 4>, nullptr, 4};
    t.f16 = {rows_kernel<FloatKernel<LoadF16, LoadF32>, 4, 4, 4>, nullptr, 4};
    t.bf16 = {rows_kernel<FloatKernel<LoadBF16, LoadBF16>, 4, 4, 4>, nullptr, 4};
    t.q8_0 = {rows_kernel<QuantKernel<BlockQ8_0>, 4, 2, 4>, nullptr, 4};
    t.q4_0 = {rows_kernel<QuantKernel<BlockQ4_0>, 4, 2, 4>, nullptr, 4};
    t.q5_0 = {rows_kernel<QuantKernel<BlockQ5_0>, 4, 2, 4>, nullptr, 4};
    add_neon_quant_kernels(t);
    return t;
  }();
  return table;
}

}  // namespace tandem::kernels::internal
