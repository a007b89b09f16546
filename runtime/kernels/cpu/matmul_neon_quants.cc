// NEON kernels for Q4_1 and the K-quants (Q4_K, Q5_K, Q6_K) on aarch64.
// The weights' quants are unsigned (at most 63), so they are valid int8 and
// go straight into vdotq_s32 (or its widening-multiply stand-in) against the
// activation bytes. Sums are exact in int32 per sub-block, multiplied by the
// sub-block scale in int32, and scaled once per super-block in float; the
// minima (Q4_K, Q5_K) and Q6_K's offset of 32 multiply the Q8_K bsums.

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

// sum(a * b) over 32 bytes (two registers each).
inline int32_t dot32(uint8x16_t a0, uint8x16_t a1, const int8_t* b) {
  const int32x4_t s = dot_i8(dot_i8(vdupq_n_s32(0), vreinterpretq_s8_u8(a0), vld1q_s8(b)),
                             vreinterpretq_s8_u8(a1), vld1q_s8(b + 16));
  return vaddvq_s32(s);
}
inline int32_t dot16(uint8x16_t a, const int8_t* b) {
  return vaddvq_s32(dot_i8(vdupq_n_s32(0), vreinterpretq_s8_u8(a), vld1q_s8(b)));
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

// The six-bit scales and minima of a Q4_K/Q5_K block as bytes.
inline void scales_and_mins_k4(const uint8_t* q, uint8_t* sc, uint8_t* m) {
  uint32_t u[3];
  std::memcpy(u, q, 12);
  constexpr uint32_t kLow6 = 0x3f3f3f3f, kLow4 = 0x0f0f0f0f, kLow2 = 0x03030303;
  const uint32_t s[2] = {u[0] & kLow6, (u[2] & kLow4) | (((u[0] >> 6) & kLow2) << 4)};
  const uint32_t n[2] = {u[1] & kLow6, ((u[2] >> 4) & kLow4) | (((u[1] >> 6) & kLow2) << 4)};
  std::memcpy(sc, s, 8);
  std::memcpy(m, n, 8);
}

// sum_s m[s] * (bsums[2s] + bsums[2s + 1]).
inline int32_t mins_dot(const uint8_t* m, const int16_t* bsums) {
  const int16x8_t pairs = vpaddq_s16(vld1q_s16(bsums), vld1q_s16(bsums + 8));
  const int16x8_t mins = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(m)));
  const int32x4_t p = vmlal_s16(vmull_s16(vget_low_s16(mins), vget_low_s16(pairs)),
                                vget_high_s16(mins), vget_high_s16(pairs));
  return vaddvq_s32(p);
}

template <bool kFive>
struct KQuant45 {
  using Block = std::conditional_t<kFive, BlockQ5_K, BlockQ4_K>;

  template <int T>
  static inline void block(const Block& w, const BlockQ8_K* const* x, int64_t b, float (&acc)[T]) {
    uint8_t sc[8], m[8];
    scales_and_mins_k4(w.scales, sc, m);
    const uint8x16_t low4 = vdupq_n_u8(0x0F);
    uint8x16_t lo[4][2], hi[4][2];
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
#pragma GCC unroll 2
      for (int k = 0; k < 2; ++k) {
        const uint8x16_t q = vld1q_u8(w.qs + 32 * c + 16 * k);
        lo[c][k] = vandq_u8(q, low4);
        hi[c][k] = vshrq_n_u8(q, 4);
      }
    }
    if constexpr (kFive) {
      const uint8x16_t bit5 = vdupq_n_u8(0x10);
#pragma GCC unroll 2
      for (int k = 0; k < 2; ++k) {
        const uint8x16_t qh = vld1q_u8(w.qh + 16 * k);
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
          const uint8x16_t m0 = vtstq_u8(qh, vdupq_n_u8(static_cast<uint8_t>(1 << (2 * c))));
          const uint8x16_t m1 = vtstq_u8(qh, vdupq_n_u8(static_cast<uint8_t>(2 << (2 * c))));
          lo[c][k] = vorrq_u8(lo[c][k], vandq_u8(m0, bit5));
          hi[c][k] = vorrq_u8(hi[c][k], vandq_u8(m1, bit5));
        }
      }
    }
    const float d = half_to_float(w.d);
    const float dmin = half_to_float(w.dmin);
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) {
      const BlockQ8_K& xb = x[j][b];
      int32_t sumi = 0;
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        sumi += sc[2 * c] * dot32(lo[c][0], lo[c][1], xb.qs + 64 * c);
        sumi += sc[2 * c + 1] * dot32(hi[c][0], hi[c][1], xb.qs + 64 * c + 32);
      }
      acc[j] += d * xb.d * static_cast<float>(sumi) -
                dmin * xb.d * static_cast<float>(mins_dot(m, xb.bsums));
    }
  }
};

struct KQuant6 {
  using Block = BlockQ6_K;

  template <int T>
  static inline void block(const Block& w, const BlockQ8_K* const* x, int64_t b, float (&acc)[T]) {
    const uint8x16_t low4 = vdupq_n_u8(0x0F);
    uint8x16_t q[2][4][2];  // [half][group of 32][16 each]
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
#pragma GCC unroll 2
      for (int k = 0; k < 2; ++k) {
        const uint8x16_t a = vld1q_u8(w.ql + 64 * h + 16 * k);
        const uint8x16_t c = vld1q_u8(w.ql + 64 * h + 32 + 16 * k);
        const uint8x16_t qh = vld1q_u8(w.qh + 32 * h + 16 * k);
        q[h][0][k] = vorrq_u8(vandq_u8(a, low4), vshlq_n_u8(vandq_u8(qh, vdupq_n_u8(0x03)), 4));
        q[h][1][k] = vorrq_u8(vandq_u8(c, low4), vshlq_n_u8(vandq_u8(qh, vdupq_n_u8(0x0C)), 2));
        q[h][2][k] = vorrq_u8(vshrq_n_u8(a, 4), vandq_u8(qh, vdupq_n_u8(0x30)));
        q[h][3][k] = vorrq_u8(vshrq_n_u8(c, 4), vshrq_n_u8(vandq_u8(qh, vdupq_n_u8(0xC0)), 2));
      }
    }
    const int16x8_t sc_lo = vmovl_s8(vld1_s8(w.scales));
    const int16x8_t sc_hi = vmovl_s8(vld1_s8(w.scales + 8));
    const float d = half_to_float(w.d);
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) {
      const BlockQ8_K& xb = x[j][b];
      int32_t sumi = 0;
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
          const int8_t* xq = xb.qs + 128 * h + 32 * k;
          sumi += w.scales[8 * h + 2 * k] * dot16(q[h][k][0], xq);
          sumi += w.scales[8 * h + 2 * k + 1] * dot16(q[h][k][1], xq + 16);
        }
      }
      // The offset of 32: sum_g scales[g] * bsums[g].
      const int16x8_t b0 = vld1q_s16(xb.bsums), b1 = vld1q_s16(xb.bsums + 8);
      int32x4_t off = vmull_s16(vget_low_s16(sc_lo), vget_low_s16(b0));
      off = vmlal_s16(off, vget_high_s16(sc_lo), vget_high_s16(b0));
      off = vmlal_s16(off, vget_low_s16(sc_hi), vget_low_s16(b1));
      off = vmlal_s16(off, vget_high_s16(sc_hi), vget_high_s16(b1));
      sumi -= 32 * vaddvq_s32(off);
      acc[j] += d * xb.d * static_cast<float>(sumi);
    }
  }
};

template <class Q>
struct KQuantKernel {
  template <int R, int T>
  static void tile(const MatmulArgs& a, int64_t r, int64_t t) {
    using Block = typename Q::Block;
    const int64_t nb = a.n_cols / kQK_K;
    const Block* w[R];
    const BlockQ8_K* x[T];
    for (int i = 0; i < R; ++i) w[i] = block_row<Block>(a.w, a.w_stride, r + i);
    for (int j = 0; j < T; ++j) x[j] = block_row<BlockQ8_K>(a.x, a.x_stride, t + j);
    float acc[R][T] = {};
    for (int64_t b = 0; b < nb; ++b) {
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) Q::template block<T>(w[i][b], x, b, acc[i]);
    }
    for (int i = 0; i < R; ++i) {
      for (int j = 0; j < T; ++j) a.y[(t + j) * a.ldy + r + i] = acc[i][j];
    }
  }
};

// Q4_1: d * dx * sum(q * x) + m * dx * sum(x), sum(x) from the BlockSums.
struct Q4_1Kernel {
  template <int R, int T>
  static void tile(const MatmulArgs& a, int64_t r, int64_t t) {
    const int64_t nb = a.n_cols / 32;
    const BlockQ4_1* w[R];
    const BlockQ8_0* x[T];
    const BlockSum* xs[T];
    for (int i = 0; i < R; ++i) w[i] = block_row<BlockQ4_1>(a.w, a.w_stride, r + i);
    for (int j = 0; j < T; ++j) {
      const uint8_t* row = a.x + (t + j) * a.x_stride;
      x[j] = reinterpret_cast<const BlockQ8_0*>(row);
      xs[j] = reinterpret_cast<const BlockSum*>(row + a.x_sums_offset);
    }
    float acc[R][T] = {};
    for (int64_t b = 0; b < nb; ++b) {
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const uint8x16_t packed = vld1q_u8(w[i][b].qs);
        const uint8x16_t lo = vandq_u8(packed, vdupq_n_u8(0x0F));
        const uint8x16_t hi = vshrq_n_u8(packed, 4);
        const float dw = half_to_float(w[i][b].d);
        const float mw = half_to_float(w[i][b].m);
#pragma GCC unroll 16
        for (int j = 0; j < T; ++j) {
          const int32_t sumi = dot32(lo, hi, x[j][b].qs);
          acc[i][j] += static_cast<float>(sumi) * (dw * xs[j][b].d) +
                       mw * xs[j][b].d * static_cast<float>(xs[j][b].bias);
        }
      }
    }
    for (int i = 0; i < R; ++i) {
      for (int j = 0; j < T; ++j) a.y[(t + j) * a.ldy + r + i] = acc[i][j];
    }
  }
};

}  // namespace

void add_neon_quant_kernels(KernelTable& t) {
  t.q4_1 = {rows_kernel<Q4_1Kernel, 4, 2, 4>, nullptr, 4};
  t.q4_k = {rows_kernel<KQuantKernel<KQuant45<false>>, 4, 2, 4>, nullptr, 4};
  t.q5_k = {rows_kernel<KQuantKernel<KQuant45<true>>, 4, 2, 4>, nullptr, 4};
  t.q6_k = {rows_kernel<KQuantKernel<KQuant6>, 4, 2, 4>, nullptr, 4};
}

}  // namespace tandem::kernels::internal
