// AVX2 kernels for Q4_1 and the K-quants (Q4_K, Q5_K, Q6_K). Compiled with
// -mavx2 -mfma -mf16c like matmul_avx2.cc, and entered only after cpuid
// reported those features (matmul.cc).
//
// The weights' quants are unsigned (Q4_1 and Q4_K 0..15, Q5_K 0..31, Q6_K
// 0..63), which is what maddubs wants: unsigned weights times the signed
// activation bytes (never -128: quantize_row_q8_k), pairwise sums of at most
// 2 * 63 * 127 < 2^15, so nothing saturates. Per sub-block the int16 pairs
// are multiplied by the sub-block scale with madd, summed exactly in int32
// over the super-block, and scaled once in float. The minima (Q4_K, Q5_K)
// and Q6_K's offset of 32 multiply the activation sums that Q8_K carries
// (bsums), so they cost one madd per super-block and token.
//
// One-token tiles take 8 rows, and prefetch the next tile's weights.

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "runtime/kernels/cpu/matmul_kernels.h"

namespace tandem::kernels::internal {
namespace {

#include "runtime/kernels/cpu/tile_driver.inc"

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float fp16(uint16_t h) { return _cvtsh_ss(h); }

inline __m256i load256(const void* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

template <class Block>
inline const Block* block_row(const uint8_t* base, size_t stride, int64_t i) {
  return reinterpret_cast<const Block*>(base + i * stride);
}

// The eight 6-bit scales (int16 lanes 0..7) and minima (lanes 8..15) of a
// Q4_K/Q5_K block.
inline __m256i scales_and_mins_k4(const uint8_t* q) {
  uint32_t u[3];
  std::memcpy(u, q, 12);
  constexpr uint32_t kLow6 = 0x3f3f3f3f, kLow4 = 0x0f0f0f0f, kLow2 = 0x03030303;
  const uint32_t sc_lo = u[0] & kLow6;
  const uint32_t sc_hi = (u[2] & kLow4) | (((u[0] >> 6) & kLow2) << 4);
  const uint32_t m_lo = u[1] & kLow6;
  const uint32_t m_hi = ((u[2] >> 4) & kLow4) | (((u[1] >> 6) & kLow2) << 4);
  return _mm256_cvtepu8_epi16(_mm_set_epi32(static_cast<int>(m_hi), static_cast<int>(m_lo),
                                            static_cast<int>(sc_hi), static_cast<int>(sc_lo)));
}

// Broadcasts int16 lane s (< 8) of both 128-bit halves to every lane.
template <int S>
inline __m256i broadcast_lane16(__m256i v) {
  return _mm256_shuffle_epi8(v, _mm256_set1_epi16(static_cast<short>(((2 * S + 1) << 8) | 2 * S)));
}

// Q4_K / Q5_K: 4 chunks of 64, each a pair of 32-element sub-blocks.
template <bool kFive>
struct KQuant45 {
  using Block = std::conditional_t<kFive, BlockQ5_K, BlockQ4_K>;

  template <int T>
  [[gnu::always_inline]] static inline void block(const Block& w, const BlockQ8_K* const* x, int64_t b,
                           __m256 (&acc)[T]) {
    const __m256i sm = scales_and_mins_k4(w.scales);
    const __m256i scales = _mm256_permute2x128_si256(sm, sm, 0x00);  // both halves: scales
    const __m128i mins = _mm256_extracti128_si256(sm, 1);
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    __m256i lo[4], hi[4];
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      const __m256i q = load256(w.qs + 32 * c);
      lo[c] = _mm256_and_si256(q, low4);
      hi[c] = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
    }
    if constexpr (kFive) {
      const __m256i qh = load256(w.qh);
      const __m256i bit5 = _mm256_set1_epi8(0x10);
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        const __m256i m0 = _mm256_set1_epi8(static_cast<char>(1 << (2 * c)));
        const __m256i m1 = _mm256_set1_epi8(static_cast<char>(2 << (2 * c)));
        lo[c] = _mm256_or_si256(
            lo[c], _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, m0), m0), bit5));
        hi[c] = _mm256_or_si256(
            hi[c], _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, m1), m1), bit5));
      }
    }
    const __m256i s0 = broadcast_lane16<0>(scales), s1 = broadcast_lane16<1>(scales);
    const __m256i s2 = broadcast_lane16<2>(scales), s3 = broadcast_lane16<3>(scales);
    const __m256i s4 = broadcast_lane16<4>(scales), s5 = broadcast_lane16<5>(scales);
    const __m256i s6 = broadcast_lane16<6>(scales), s7 = broadcast_lane16<7>(scales);
    const __m256i sc[8] = {s0, s1, s2, s3, s4, s5, s6, s7};
    const float d = fp16(w.d);
    const float dmin = fp16(w.dmin);
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) {
      const BlockQ8_K& xb = x[j][b];
      __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        const __m256i p0 = _mm256_maddubs_epi16(lo[c], load256(xb.qs + 64 * c));
        const __m256i p1 = _mm256_maddubs_epi16(hi[c], load256(xb.qs + 64 * c + 32));
        sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(_mm256_madd_epi16(p0, sc[2 * c]),
                                                       _mm256_madd_epi16(p1, sc[2 * c + 1])));
      }
      // sum_s m[s] * (sum of x over sub-block s): the bsums in pairs.
      const __m128i bs = _mm_hadd_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xb.bsums)),
                                        _mm_loadu_si128(reinterpret_cast<const __m128i*>(xb.bsums + 8)));
      const __m256i summ = _mm256_zextsi128_si256(_mm_madd_epi16(mins, bs));
      acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb.d), _mm256_cvtepi32_ps(sumi), acc[j]);
      acc[j] = _mm256_fnmadd_ps(_mm256_set1_ps(dmin * xb.d), _mm256_cvtepi32_ps(summ), acc[j]);
    }
  }
};

// Q6_K: two halves of 128 elements, four 32-element groups each, one int8
// scale per 16 elements; q - 32 is folded in as -32 * sum_g scale[g] * bsums[g].
struct KQuant6 {
  using Block = BlockQ6_K;

  // The int16 scale of group 2k (low 128-bit half) and 2k + 1 (high half).
  template <int K>
  static inline __m256i scale_pair(__m256i sc8) {
    const __m128i lo = _mm_set1_epi16(static_cast<short>(((4 * K + 1) << 8) | 4 * K));
    const __m128i hi = _mm_set1_epi16(static_cast<short>(((4 * K + 3) << 8) | (4 * K + 2)));
    return _mm256_shuffle_epi8(sc8, _mm256_set_m128i(hi, lo));
  }

  template <int T>
  [[gnu::always_inline]] static inline void block(const Block& w, const BlockQ8_K* const* x, int64_t b,
                           __m256 (&acc)[T]) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    __m256i q[2][4];
    __m256i sc[2][4];
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = load256(w.ql + 64 * h);
      const __m256i ql1 = load256(w.ql + 64 * h + 32);
      const __m256i qh = load256(w.qh + 32 * h);
      q[h][0] = _mm256_or_si256(_mm256_and_si256(ql0, low4),
                                _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x03)), 4));
      q[h][1] = _mm256_or_si256(_mm256_and_si256(ql1, low4),
                                _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x0C)), 2));
      q[h][2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                                _mm256_and_si256(qh, _mm256_set1_epi8(0x30)));
      q[h][3] = _mm256_or_si256(
          _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
          _mm256_srli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(static_cast<char>(0xC0))), 2));
      // The 8 scales of this half as int16 in both 128-bit halves.
      const __m128i s16 =
          _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w.scales + 8 * h)));
      const __m256i both = _mm256_set_m128i(s16, s16);
      sc[h][0] = scale_pair<0>(both);
      sc[h][1] = scale_pair<1>(both);
      sc[h][2] = scale_pair<2>(both);
      sc[h][3] = scale_pair<3>(both);
    }
    const __m256i all_scales =
        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.scales)));
    const float d = fp16(w.d);
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) {
      const BlockQ8_K& xb = x[j][b];
      __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
          const __m256i p = _mm256_maddubs_epi16(q[h][k], load256(xb.qs + 128 * h + 32 * k));
          sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, sc[h][k]));
        }
      }
      const __m256i offset = _mm256_madd_epi16(all_scales, load256(xb.bsums));
      sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(offset, 5));
      acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb.d), _mm256_cvtepi32_ps(sumi), acc[j]);
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
    __m256 acc[R][T];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) acc[i][j] = _mm256_setzero_ps();
    }
    // One-token tiles prefetch the block that the next tile (the R rows
    // below) reads at the same step: R short row streams are too many and
    // too short for the hardware prefetchers, and this keeps one tile of
    // weights (R rows, several KiB) in flight ahead of the products.
    const size_t ahead = static_cast<size_t>(R) * a.w_stride;
    for (int64_t b = 0; b < nb; ++b) {
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        if constexpr (T == 1) {
          const char* p = reinterpret_cast<const char*>(w[i] + b) + ahead;
#pragma GCC unroll 4
          for (size_t l = 0; l < sizeof(Block); l += 64) _mm_prefetch(p + l, _MM_HINT_T0);
        }
        Q::template block<T>(w[i][b], x, b, acc[i]);
      }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) a.y[(t + j) * a.ldy + r + i] = hsum(acc[i][j]);
    }
  }
};

// Q4_1: d * dx * sum(q * x) + m * dx * sum(x), with sum(x) from the
// activation's BlockSums (bias = +sum(qs) for Q4_1).
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
    __m256 acc[R][T];
    float accm[R][T];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) {
        acc[i][j] = _mm256_setzero_ps();
        accm[i][j] = 0.0f;
      }
    }
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    for (int64_t b = 0; b < nb; ++b) {
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[i][b].qs));
        const __m256i wq =
            _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low4);
        const float dw = fp16(w[i][b].d);
        const float mw = fp16(w[i][b].m);
#pragma GCC unroll 16
        for (int j = 0; j < T; ++j) {
          const __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(wq, load256(x[j][b].qs)), ones);
          acc[i][j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xs[j][b].d), _mm256_cvtepi32_ps(dot),
                                      acc[i][j]);
          accm[i][j] += mw * xs[j][b].d * static_cast<float>(xs[j][b].bias);
        }
      }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) a.y[(t + j) * a.ldy + r + i] = hsum(acc[i][j]) + accm[i][j];
    }
  }
};

}  // namespace

void add_avx2_quant_kernels(KernelTable& t) {
  t.q4_1 = {rows_kernel<Q4_1Kernel, 4, 2, 4>, t.q8_0.convert, 4};
  t.q4_k = {rows_kernel<KQuantKernel<KQuant45<false>>, 8, 2, 4>, nullptr, 4};
  t.q5_k = {rows_kernel<KQuantKernel<KQuant45<true>>, 8, 2, 4>, nullptr, 4};
  t.q6_k = {rows_kernel<KQuantKernel<KQuant6>, 8, 2, 4>, nullptr, 4};
}

}  // namespace tandem::kernels::internal
