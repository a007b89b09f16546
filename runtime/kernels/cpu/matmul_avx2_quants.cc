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
// One-token tiles take 8 rows, and prefetch the next tile's weights. The
// kernels for packed Q4_K and Q6_K are in matmul_avx2_packed_kquants.cc.

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
// Q4_K/Q5_K block, unpacked with byte shuffles. Reads 16 bytes from `q`,
// the 12 scale bytes and 4 of the quants after them (ignored).
inline __m256i scales_and_mins_k4(const uint8_t* q) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  constexpr char kZ = static_cast<char>(0x80);  // pshufb: a zero byte
  // Bytes [v0..3 | v8..11 | v4..7 | v8..11]: the low 6 bits of sc0..3 and
  // m0..3, and the nibbles that are the low 4 bits of sc4..7 and m4..7.
  const __m128i a = _mm_shuffle_epi8(v, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9,
                                                      10, 11));
  // The top two bits of v0..3 (for sc4..7) and v4..7 (m4..7), in place.
  const __m128i b = _mm_shuffle_epi8(v, _mm_setr_epi8(kZ, kZ, kZ, kZ, 0, 1, 2, 3, kZ, kZ, kZ, kZ,
                                                      4, 5, 6, 7));
  const __m128i low6 = _mm_and_si128(a, _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63,
                                                      63, 0, 0, 0, 0));
  const __m128i high_nibbles = _mm_and_si128(
      _mm_srli_epi16(a, 4), _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15));
  const __m128i top2 = _mm_srli_epi16(_mm_and_si128(b, _mm_set1_epi8(static_cast<char>(0xC0))), 2);
  return _mm256_cvtepu8_epi16(_mm_or_si128(_mm_or_si128(low6, high_nibbles), top2));
}

// Broadcasts int16 lane s (< 8) of both 128-bit halves to every lane.
template <int S>
inline __m256i broadcast_lane16(__m256i v) {
  return _mm256_shuffle_epi8(v, _mm256_set1_epi16(static_cast<short>(((2 * S + 1) << 8) | 2 * S)));
}

// Q4_K / Q5_K: 4 chunks of 64, each a pair of 32-element sub-blocks. Each
// chunk is unpacked and used at once (for every token) rather than all up
// front, so that nothing spills from the 16 ymm registers.
template <bool kFive>
struct KQuant45 {
  using Block = std::conditional_t<kFive, BlockQ5_K, BlockQ4_K>;

  template <int C, int T>
  [[gnu::always_inline]] static inline void chunk(const Block& w, const BlockQ8_K* const* x,
                                                  int64_t b, __m256i scales, __m256i qh,
                                                  __m256i (&sumi)[T]) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m256i q = load256(w.qs + 32 * C);
    __m256i lo = _mm256_and_si256(q, low4);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
    if constexpr (kFive) {
      const __m256i bit5 = _mm256_set1_epi8(0x10);
      const __m256i m0 = _mm256_set1_epi8(static_cast<char>(1 << (2 * C)));
      const __m256i m1 = _mm256_set1_epi8(static_cast<char>(2 << (2 * C)));
      lo = _mm256_or_si256(lo,
                           _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, m0), m0), bit5));
      hi = _mm256_or_si256(hi,
                           _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, m1), m1), bit5));
    }
    const __m256i s0 = broadcast_lane16<2 * C>(scales);
    const __m256i s1 = broadcast_lane16<2 * C + 1>(scales);
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) {
      const int8_t* xq = x[j][b].qs + 64 * C;
      const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load256(xq)), s0);
      const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load256(xq + 32)), s1);
      sumi[j] = _mm256_add_epi32(sumi[j], _mm256_add_epi32(p0, p1));
    }
  }

  // Per token and super-block, shared by all rows: the sums of x over each
  // 32-element sub-block (the bsums in pairs).
  using XSums = __m128i;
  static inline XSums x_sums(const BlockQ8_K& xb) {
    return _mm_hadd_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xb.bsums)),
                          _mm_loadu_si128(reinterpret_cast<const __m128i*>(xb.bsums + 8)));
  }

  template <int T>
  [[gnu::always_inline]] static inline void block(const Block& w, const BlockQ8_K* const* x,
                                                  int64_t b, const XSums (&xs)[T],
                                                  __m256 (&acc)[T]) {
    const __m256i sm = scales_and_mins_k4(w.scales);
    const __m256i scales = _mm256_permute2x128_si256(sm, sm, 0x00);  // both halves: scales
    __m256i qh = _mm256_setzero_si256();
    if constexpr (kFive) qh = load256(w.qh);
    __m256i sumi[T];
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) sumi[j] = _mm256_setzero_si256();
    chunk<0, T>(w, x, b, scales, qh, sumi);
    chunk<1, T>(w, x, b, scales, qh, sumi);
    chunk<2, T>(w, x, b, scales, qh, sumi);
    chunk<3, T>(w, x, b, scales, qh, sumi);
    const __m128i mins = _mm256_extracti128_si256(sm, 1);
    const float d = fp16(w.d);
    const float dmin = fp16(w.dmin);
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) {
      const BlockQ8_K& xb = x[j][b];
      // sum_s m[s] * (sum of x over sub-block s).
      const __m256i summ = _mm256_zextsi128_si256(_mm_madd_epi16(mins, xs[j]));
      acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb.d), _mm256_cvtepi32_ps(sumi[j]), acc[j]);
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

  template <int K, int T>
  [[gnu::always_inline]] static inline void group(__m256i q, __m256i sc8,
                                                  const BlockQ8_K* const* x, int64_t b,
                                                  int offset, __m256i (&sumi)[T]) {
    const __m256i sc = scale_pair<K>(sc8);
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) {
      const __m256i p = _mm256_maddubs_epi16(q, load256(x[j][b].qs + offset + 32 * K));
      sumi[j] = _mm256_add_epi32(sumi[j], _mm256_madd_epi16(p, sc));
    }
  }

  using XSums = __m256i;  // the bsums
  static inline XSums x_sums(const BlockQ8_K& xb) { return load256(xb.bsums); }

  template <int T>
  [[gnu::always_inline]] static inline void block(const Block& w, const BlockQ8_K* const* x,
                                                  int64_t b, const XSums (&xs)[T],
                                                  __m256 (&acc)[T]) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    __m256i sumi[T];
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) sumi[j] = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = load256(w.ql + 64 * h);
      const __m256i ql1 = load256(w.ql + 64 * h + 32);
      const __m256i qh = load256(w.qh + 32 * h);
      // The 8 scales of this half as int16 in both 128-bit halves.
      const __m128i s16 =
          _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w.scales + 8 * h)));
      const __m256i sc8 = _mm256_set_m128i(s16, s16);
      group<0, T>(_mm256_or_si256(_mm256_and_si256(ql0, low4),
                                  _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x03)), 4)),
                  sc8, x, b, 128 * h, sumi);
      group<1, T>(_mm256_or_si256(_mm256_and_si256(ql1, low4),
                                  _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x0C)), 2)),
                  sc8, x, b, 128 * h, sumi);
      group<2, T>(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                                  _mm256_and_si256(qh, _mm256_set1_epi8(0x30))),
                  sc8, x, b, 128 * h, sumi);
      group<3, T>(
          _mm256_or_si256(
              _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
              _mm256_srli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(static_cast<char>(0xC0))), 2)),
          sc8, x, b, 128 * h, sumi);
    }
    const __m256i all_scales =
        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.scales)));
    const float d = fp16(w.d);
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) {
      const BlockQ8_K& xb = x[j][b];
      const __m256i offset = _mm256_madd_epi16(all_scales, xs[j]);
      const __m256i s = _mm256_sub_epi32(sumi[j], _mm256_slli_epi32(offset, 5));
      acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb.d), _mm256_cvtepi32_ps(s), acc[j]);
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
      typename Q::XSums xs[T];
#pragma GCC unroll 8
      for (int j = 0; j < T; ++j) xs[j] = Q::x_sums(x[j][b]);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        if constexpr (T == 1) {
          const char* p = reinterpret_cast<const char*>(w[i] + b) + ahead;
#pragma GCC unroll 4
          for (size_t l = 0; l < sizeof(Block); l += 64) _mm_prefetch(p + l, _MM_HINT_T0);
        }
        Q::template block<T>(w[i][b], x, b, xs, acc[i]);
      }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) a.y[(t + j) * a.ldy + r + i] = hsum(acc[i][j]);
    }
  }
};

// Packed Q4_K (format in matmul_kernels.h): 8 rows in the 8 int32 lanes,
// so that each 4-byte activation broadcast feeds 8 rows and nothing needs a
// horizontal sum. Per sub-block and half, the 8 maddubs results add up in
// int16 (8 * 2 * 15 * 127 < 2^15) and one madd applies the rows' scales.
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
    const size_t ahead = static_cast<size_t>(R) * a.w_stride;  // the next tile, as KQuantKernel
    for (int64_t b = 0; b < nb; ++b) {
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        if constexpr (T == 1) {
          _mm_prefetch(reinterpret_cast<const char*>(w[i] + b) + ahead, _MM_HINT_T0);
        }
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

// quantize_row_q8_k with AVX2, bit for bit: the same float products and
// round-half-even, and the same choice of the extreme element (the first
// of largest magnitude, whose sign sets the scale's).
void convert_q8_k_avx2(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_K*>(dst);
  constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float* xb = x + i * kQK_K;
    __m256 vmax = _mm256_loadu_ps(xb), vmin = vmax;
    for (int j = 8; j < kQK_K; j += 8) {
      const __m256 v = _mm256_loadu_ps(xb + j);
      vmax = _mm256_max_ps(vmax, v);
      vmin = _mm256_min_ps(vmin, v);
    }
    alignas(32) float mx[8], mn[8];
    _mm256_store_ps(mx, vmax);
    _mm256_store_ps(mn, vmin);
    float hi = mx[0], lo = mn[0];
    for (int l = 1; l < 8; ++l) {
      hi = std::max(hi, mx[l]);
      lo = std::min(lo, mn[l]);
    }
    const float amax = std::max(hi, -lo);
    if (amax == 0.0f) {
      std::memset(&y[i], 0, sizeof(y[i]));
      continue;
    }
    float max = hi >= -lo ? hi : lo;
    if (hi == -lo) {  // both signs reach amax: the first one counts
      for (int j = 0; j < kQK_K; ++j) {
        if (xb[j] == hi || xb[j] == lo) {
          max = xb[j];
          break;
        }
      }
    }
    const float iscale = -127.0f / max;
    const __m256 mul = _mm256_set1_ps(iscale);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int j = 0; j < kQK_K; j += 32) {
      __m256i q[4];
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        q[k] = _mm256_cvtps_epi32(
            _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(xb + j + 8 * k), mul), kRound));
      }
      // Sums of each 16, from the int32 values.
      const __m256i s01 = _mm256_add_epi32(q[0], q[1]);
      const __m256i s23 = _mm256_add_epi32(q[2], q[3]);
      const __m256i h = _mm256_hadd_epi32(s01, s23);  // [s01 0+1, 2+3, s23 0+1, 2+3 | ...]
      alignas(32) int32_t hs[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(hs), h);
      y[i].bsums[j / 16] = static_cast<int16_t>(hs[0] + hs[1] + hs[4] + hs[5]);
      y[i].bsums[j / 16 + 1] = static_cast<int16_t>(hs[2] + hs[3] + hs[6] + hs[7]);
      // packs works within 128-bit lanes; the permute restores the order.
      // Saturation clamps +128 (never reached: |iscale * x| <= 127) to 127.
      const __m256i p =
          _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[i].qs + j),
                          _mm256_permutevar8x32_epi32(p, perm));
    }
    y[i].d = 1.0f / iscale;
  }
}

}  // namespace

void add_avx2_quant_kernels(KernelTable& t) {
  t.q4_1 = {rows_kernel<Q4_1Kernel, 8, 2, 4>, t.q8_0.convert, 4};
  t.q4_k = {rows_kernel<KQuantKernel<KQuant45<false>>, 8, 2, 4>, convert_q8_k_avx2, 4};
  t.q5_k = {rows_kernel<KQuantKernel<KQuant45<true>>, 8, 2, 4>, convert_q8_k_avx2, 4};
  t.q6_k = {rows_kernel<KQuantKernel<KQuant6>, 8, 2, 4>, convert_q8_k_avx2, 4};
  add_avx2_packed_kquant_kernels(t);
}

}  // namespace tandem::kernels::internal
