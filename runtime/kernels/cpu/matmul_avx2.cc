// AVX2 + FMA + F16C kernels. Compiled with -mavx2 -mfma -mf16c, and entered
// only after cpuid reported those features (see matmul.cc).
//
// Quantized blocks use ggml's sign trick: maddubs multiplies unsigned by
// signed bytes, so |w| is paired with x carrying w's sign; the pairwise int16
// sums cannot saturate because |w|, |x| <= 127 (q8_0) or 16 (q4_0, q5_0).

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "runtime/kernels/cpu/matmul_kernels.h"

namespace tandem::kernels::internal {
namespace {

#include "runtime/kernels/cpu/tile_driver.inc"
#include "runtime/kernels/cpu/avx2_quant_unpack.inc"

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256 broadcast_fp16(uint16_t h) {
  return _mm256_cvtph_ps(_mm_set1_epi16(static_cast<short>(h)));
}

template <class Block>
inline const Block* block_row(const uint8_t* base, size_t stride, int64_t i) {
  return reinterpret_cast<const Block*>(base + i * stride);
}

// Signed weights of one block: q8_0 as stored, q4_0 unpacked to [-8, 7].
inline __m256i load_weights(const BlockQ8_0& b) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
}
inline __m256i load_weights(const BlockQ4_0& b) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
  return _mm256_sub_epi8(_mm256_and_si256(both, _mm256_set1_epi8(0x0F)), _mm256_set1_epi8(8));
}
// q5_0: the nibbles as q4_0, with bit j of qh (expanded to byte j by a
// shuffle and a compare) as their fifth bit, minus 16: [-16, 15].
inline __m256i load_weights(const BlockQ5_0& b) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m256i nibbles = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
                                           _mm256_set1_epi8(0x0F));
  int32_t qh;
  std::memcpy(&qh, b.qh, sizeof(qh));
  // Byte j takes byte j / 8 of qh; OR-ing every bit but j % 8 makes it all
  // ones exactly when bit j is set.
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(qh), _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                               0x0101010101010101, 0x0000000000000000));
  const __m256i set = _mm256_cmpeq_epi8(
      _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe)), _mm256_set1_epi8(-1));
  const __m256i q = _mm256_or_si256(nibbles, _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
  return _mm256_sub_epi8(q, _mm256_set1_epi8(16));
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
    __m256 acc[R][T];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) acc[i][j] = _mm256_setzero_ps();
    }
    const __m256i ones = _mm256_set1_epi16(1);
    // One-token tiles prefetch what the next tile (the R rows below) reads
    // at the same step: R short row streams are more than the hardware
    // prefetchers follow well.
    const size_t ahead = static_cast<size_t>(R) * a.w_stride;
    for (int64_t b = 0; b < nb; ++b) {
      if constexpr (T == 1) {
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i) {
          _mm_prefetch(reinterpret_cast<const char*>(w[i] + b) + ahead, _MM_HINT_T0);
        }
      }
      __m256i xq[T];
      __m256 dx[T];
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) {
        xq[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[j][b].qs));
        dx[j] = broadcast_fp16(x[j][b].d);
      }
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const __m256i wq = load_weights(w[i][b]);
        const __m256i aw = _mm256_sign_epi8(wq, wq);
        const __m256 dw = broadcast_fp16(w[i][b].d);
#pragma GCC unroll 16
        for (int j = 0; j < T; ++j) {
          const __m256i sx = _mm256_sign_epi8(xq[j], wq);
          const __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones);
          acc[i][j] = _mm256_fmadd_ps(_mm256_mul_ps(dw, dx[j]), _mm256_cvtepi32_ps(dot), acc[i][j]);
        }
      }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) a.y[(t + j) * a.ldy + r + i] = hsum(acc[i][j]);
    }
  }
};

// Float weights (f32, f16, bf16) against f32 or bf16 activations, 8 columns
// per step; one-token tiles unroll twice more to cover the FMA latency.
struct LoadF32 {
  static __m256 load(const uint8_t* row, int64_t c) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + c);
  }
};
struct LoadF16 {
  static __m256 load(const uint8_t* row, int64_t c) {
    return _mm256_cvtph_ps(_mm_loadu_si128(
        reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(row) + c)));
  }
};
struct LoadBF16 {
  static __m256 load(const uint8_t* row, int64_t c) {
    const __m128i h = _mm_loadu_si128(
        reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(row) + c));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
};

template <class WLoad, class XLoad>
struct FloatKernel {
  template <int R, int T>
  static void tile(const MatmulArgs& a, int64_t r, int64_t t) {
    constexpr int U = T == 1 ? 2 : 1;  // independent chains per output
    const uint8_t* w[R];
    const uint8_t* x[T];
    for (int i = 0; i < R; ++i) w[i] = a.w + (r + i) * a.w_stride;
    for (int j = 0; j < T; ++j) x[j] = a.x + (t + j) * a.x_stride;
    __m256 acc[R][T][U];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) {
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) acc[i][j][u] = _mm256_setzero_ps();
      }
    }
    for (int64_t c = 0; c < a.n_cols; c += 8 * U) {
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) {
        __m256 xv[T];
#pragma GCC unroll 16
        for (int j = 0; j < T; ++j) xv[j] = XLoad::load(x[j], c + 8 * u);
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i) {
          const __m256 wv = WLoad::load(w[i], c + 8 * u);
#pragma GCC unroll 16
          for (int j = 0; j < T; ++j) acc[i][j][u] = _mm256_fmadd_ps(wv, xv[j], acc[i][j][u]);
        }
      }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) {
        __m256 s = acc[i][j][0];
        if constexpr (U == 2) s = _mm256_add_ps(s, acc[i][j][1]);
        a.y[(t + j) * a.ldy + r + i] = hsum(s);
      }
    }
  }
};

inline int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Pins v in a register at this point of the program. GCC otherwise
// reassociates the int32 add chains of the batch kernels into trees whose
// many partial sums spill to the stack (and runs slower than the chains).
inline void pin(__m256i& v) { asm("" : "+x"(v)); }

inline __m256i load_slab(const uint8_t* q) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
}

inline __m256i broadcast_x(const int8_t* xq, int k) {
  return _mm256_set1_epi32(load_i32(xq + 4 * k));
}

// One token's int32 sums of one packed block column for G groups of 16 rows
// (two 8-row halves each: the 32-byte halves of the 64-byte slabs). The slab
// loop is the outer one, so each broadcast of x serves all 2G weight
// registers, and the 2G int32 sums stay in registers at G = 4.
// Q8_0: the sign trick with x as the unsigned operand, |x| (once per slab)
// times w carrying x's sign, each maddubs result widened to int32 at once
// (two could overflow int16).
struct PackedQ8Decode {
  template <int G>
  static inline void dot_groups(const uint8_t* const (&q)[G], const int8_t* xq, int32_t,
                                __m256i (&s)[G][2]) {
    const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) s[g][0] = s[g][1] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) {
      const __m256i bx = broadcast_x(xq, k);
      const __m256i ax = _mm256_abs_epi8(bx);
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) {
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          const __m256i w = load_slab(q[g] + 64 * k + 32 * h);
          const __m256i p = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(w, bx));
          s[g][h] = _mm256_add_epi32(s[g][h], _mm256_madd_epi16(p, ones));
          pin(s[g][h]);
        }
      }
    }
  }
};
// The unsigned quants of packed Q4_0/Q4_1 (nibbles) and Q5_0 (5 bits) block
// columns: unpack() gives those of slab k, half h of the block column at q
// as the maddubs operands for the activation quads k (lo) and k + 4 (hi).
// The int16 sums of kWiden slabs' maddubs results are widened together: all
// four for nibbles (8 * 2 * 15 * 127 < 2^15), two for 5-bit quants (whose
// products reach 2 * 31 * 127).
struct NibbleQuants {
  static constexpr int kWiden = 4;
  static inline void unpack(const uint8_t* q, int k, int h, __m256i& lo, __m256i& hi) {
    unpack_nibbles(load_slab(q + 64 * k + 32 * h), lo, hi);
  }
};
// Q5_0 (format in matmul_kernels.h): hi's top two bits come from the
// block column's top-bit bytes.
struct FiveBitQuants {
  static constexpr int kWiden = 2;
  static inline void unpack(const uint8_t* q, int k, int h, __m256i& lo, __m256i& hi) {
    unpack_five_bits(load_slab(q + 64 * k + 32 * h), load_slab(q + 256 + 32 * h), k, lo, hi);
  }
};

// Q4_0, Q4_1 and Q5_0: unsigned quants times x; the int32 sums start from
// `bias`, the BlockSum's, which removes the quants' offset (0 for Q4_1).
template <class Quants>
struct PackedUnsignedDecode {
  template <int G>
  static inline void dot_groups(const uint8_t* const (&q)[G], const int8_t* xq, int32_t bias,
                                __m256i (&s)[G][2]) {
    constexpr int W = Quants::kWiden;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i p[G][2];
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const __m256i xl = broadcast_x(xq, k);
      const __m256i xh = broadcast_x(xq, k + 4);
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) {
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          __m256i lo, hi;
          Quants::unpack(q[g], k, h, lo, hi);
          const __m256i t =
              _mm256_add_epi16(_mm256_maddubs_epi16(lo, xl), _mm256_maddubs_epi16(hi, xh));
          p[g][h] = k % W == 0 ? t : _mm256_add_epi16(p[g][h], t);
          pin(p[g][h]);
          if (k % W == W - 1) {
            const __m256i wide = _mm256_madd_epi16(p[g][h], ones);
            s[g][h] = k == W - 1 ? _mm256_add_epi32(wide, _mm256_set1_epi32(bias))
                                 : _mm256_add_epi32(s[g][h], wide);
          }
        }
      }
    }
  }
};

// Batch passes over one 8-row half of a packed group for T tokens, one block
// column at a time: each 32-byte weight load (8 rows x 4 columns) feeds all T
// tokens, whose int32 block sums stay in registers (T of them, with T float
// accumulators) until the block's scales fold them in. The slab loop is the
// outer one so that a weight register lives only while the tokens pass.
// Q8_0 with ggml's sign trick: |w| times x carrying w's sign, each maddubs
// result widened to int32 at once (two could overflow int16).
template <int H>
struct PackedQ8Pass {
  static constexpr int kHalves = H;
  static constexpr bool kFloatBias = false;
  static constexpr bool kMinima = false;
  static constexpr size_t kQuantBytes = 16 * 32;
  template <int T>
  [[gnu::always_inline]] static inline void block(const uint8_t* q, const BlockQ8_0* const* x,
                                                  int64_t b, __m256i (&sum)[H][T]) {
    const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) {
      __m256i w[H], aw[H];
#pragma GCC unroll 2
      for (int h = 0; h < H; ++h) {
        w[h] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 64 * k + 32 * h));
        aw[h] = _mm256_abs_epi8(w[h]);
      }
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) {
        const __m256i xv = broadcast_x(x[j][b].qs, k);
#pragma GCC unroll 2
        for (int h = 0; h < H; ++h) {
          const __m256i s = _mm256_madd_epi16(
              _mm256_maddubs_epi16(aw[h], _mm256_sign_epi8(xv, w[h])), ones);
          sum[h][j] = k == 0 ? s : _mm256_add_epi32(sum[h][j], s);
          pin(sum[h][j]);
        }
      }
    }
  }
};
// Q4_0, Q4_1 and Q5_0: unsigned quants times x, widened as in
// PackedUnsignedDecode. For Q4_0 and Q5_0 the tile adds the BlockSum's
// d * bias, which removes the quants' offset, in float (kFloatBias). Q4_1
// (kQ4_1) has no offset but a minimum per row and block, which multiplies the
// BlockSum's d * sum(x) (kMinima).
template <int H, class Quants, size_t kBytes, bool kQ4_1 = false>
struct PackedUnsignedPass {
  static constexpr int kHalves = H;
  static constexpr bool kFloatBias = !kQ4_1;
  static constexpr bool kMinima = kQ4_1;
  static constexpr size_t kQuantBytes = kBytes;
  template <int T>
  [[gnu::always_inline]] static inline void block(const uint8_t* q, const BlockQ8_0* const* x,
                                                  int64_t b, __m256i (&sum)[H][T]) {
    constexpr int W = Quants::kWiden;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i p[H][T];
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      __m256i lo[H], hi[H];
#pragma GCC unroll 2
      for (int h = 0; h < H; ++h) Quants::unpack(q, k, h, lo[h], hi[h]);
#pragma GCC unroll 8
      for (int j = 0; j < T; ++j) {
        const __m256i xl = broadcast_x(x[j][b].qs, k);
        const __m256i xh = broadcast_x(x[j][b].qs, k + 4);
#pragma GCC unroll 2
        for (int h = 0; h < H; ++h) {
          const __m256i d = _mm256_add_epi16(_mm256_maddubs_epi16(lo[h], xl),
                                             _mm256_maddubs_epi16(hi[h], xh));
          p[h][j] = k % W == 0 ? d : _mm256_add_epi16(p[h][j], d);
          pin(p[h][j]);
          if (k == W - 1 && k < 3) sum[h][j] = _mm256_madd_epi16(p[h][j], ones);
        }
      }
    }
    // The last widening after the loop, where the tokens' registers are free.
#pragma GCC unroll 2
    for (int h = 0; h < H; ++h) {
#pragma GCC unroll 8
      for (int j = 0; j < T; ++j) {
        const __m256i wide = _mm256_madd_epi16(p[h][j], ones);
        sum[h][j] = W == 4 ? wide : _mm256_add_epi32(sum[h][j], wide);
      }
    }
  }
};
template <int H>
using PackedQ4Pass = PackedUnsignedPass<H, NibbleQuants, 16 * 16>;
template <int H>
using PackedQ4_1Pass = PackedUnsignedPass<H, NibbleQuants, 16 * 16, true>;
template <int H>
using PackedQ5Pass = PackedUnsignedPass<H, FiveBitQuants, kPackedQ5_0Bytes>;
using PackedQ4Decode = PackedUnsignedDecode<NibbleQuants>;
using PackedQ5Decode = PackedUnsignedDecode<FiveBitQuants>;

// Packed Q8_0/Q4_0/Q4_1/Q5_0 (format in matmul_kernels.h): batches take the group's 16
// rows as two 8-row halves, one Pass each (the tokens' activations stay in L1
// between them); one token takes both halves per block (Decode).
template <class Pass, class Decode>
struct PackedKernel {
  // A group's quants follow its scales (and Q4_1's minima), 16 fp16 per block.
  static const uint8_t* quants_of(const uint8_t* group, int64_t nb) {
    return group + nb * 16 * sizeof(uint16_t) * (Pass::kMinima ? 2 : 1);
  }

  template <int T>
  static void tile(const MatmulArgs& a, int64_t r, int64_t t, int n_valid) {
    const int64_t nb = a.n_cols / 32;
    const uint8_t* group = a.w + (r / 16) * a.w_stride;
    const auto* scales = reinterpret_cast<const uint16_t*>(group);
    const uint16_t* minima = scales + nb * 16;
    const uint8_t* quants = quants_of(group, nb);
    const BlockQ8_0* x[T];
    const BlockSum* xs[T];
    for (int j = 0; j < T; ++j) {
      const uint8_t* row = a.x + (t + j) * a.x_stride;
      x[j] = reinterpret_cast<const BlockQ8_0*>(row);
      xs[j] = reinterpret_cast<const BlockSum*>(row + a.x_sums_offset);
    }
    // The float sums live in memory (one load and store per block and
    // token): the registers go to the T int32 sums of the block.
    constexpr int H = Pass::kHalves;
    alignas(32) float acc[2][T][8];
    for (int j = 0; j < T; ++j) {
      _mm256_store_ps(acc[0][j], _mm256_setzero_ps());
      _mm256_store_ps(acc[1][j], _mm256_setzero_ps());
    }
    for (int h0 = 0; h0 < 2; h0 += H) {
      for (int64_t b = 0; b < nb; ++b) {
        __m256i sum[H][T];
        Pass::template block<T>(quants + b * Pass::kQuantBytes + 32 * h0, x, b, sum);
#pragma GCC unroll 2
        for (int h = 0; h < H; ++h) {
          const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(
              reinterpret_cast<const __m128i*>(scales + b * 16 + 8 * (h0 + h))));
#pragma GCC unroll 16
          for (int j = 0; j < T; ++j) {
            float* o = acc[h0 + h][j];
            const __m256 dx = _mm256_set1_ps(xs[j][b].d);
            __m256 v;
            if constexpr (Pass::kFloatBias) {
              // dw * (dx * sum + dx * bias)
              const __m256 xsum = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[h][j]), dx,
                                                  _mm256_set1_ps(xs[j][b].d_bias));
              v = _mm256_fmadd_ps(xsum, dw, _mm256_load_ps(o));
            } else {
              v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[h][j]), _mm256_mul_ps(dw, dx),
                                  _mm256_load_ps(o));
            }
            if constexpr (Pass::kMinima) {
              const __m256 m = _mm256_cvtph_ps(_mm_loadu_si128(
                  reinterpret_cast<const __m128i*>(minima + b * 16 + 8 * (h0 + h))));
              v = _mm256_fmadd_ps(m, _mm256_set1_ps(xs[j][b].d_bias), v);
            }
            asm("" : "+x"(v));
            _mm256_store_ps(o, v);
          }
        }
      }
    }
    __m256 out[2][T];
    for (int j = 0; j < T; ++j) {
      out[0][j] = _mm256_load_ps(acc[0][j]);
      out[1][j] = _mm256_load_ps(acc[1][j]);
    }
    store<T>(a, r, t, n_valid, out);
  }

  // Stores only the first n_valid rows: the padding rows of the last group
  // have no place in y.
  template <int T>
  static void store(const MatmulArgs& a, int64_t r, int64_t t, int n_valid,
                    const __m256 (&acc)[2][T]) {
    for (int j = 0; j < T; ++j) {
      float* y = a.y + (t + j) * a.ldy + r;
      if (n_valid == 16) {
        _mm256_storeu_ps(y, acc[0][j]);
        _mm256_storeu_ps(y + 8, acc[1][j]);
      } else {
        alignas(32) float tmp[16];
        _mm256_store_ps(tmp, acc[0][j]);
        _mm256_store_ps(tmp + 8, acc[1][j]);
        std::memcpy(y, tmp, sizeof(float) * n_valid);
      }
    }
  }

  // One token, G groups side by side: G sequential streams, which the
  // hardware prefetchers follow. Software prefetches 1 KiB ahead made this
  // loop slower on Zen 3 (Q8_0, one thread, median of 4 alternated runs:
  // 13.1 against 18.6 GB/s).
  template <int G>
  static void decode_groups(const MatmulArgs& a, int64_t r, int n_valid_last) {
    const int64_t nb = a.n_cols / 32;
    const uint16_t* scales[G];
    const uint8_t* quants[G];
    for (int g = 0; g < G; ++g) {
      const uint8_t* group = a.w + (r / 16 + g) * a.w_stride;
      scales[g] = reinterpret_cast<const uint16_t*>(group);
      quants[g] = quants_of(group, nb);
    }
    const auto* x = reinterpret_cast<const BlockQ8_0*>(a.x);
    const auto* xs = reinterpret_cast<const BlockSum*>(a.x + a.x_sums_offset);
    __m256 acc[G][2];
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) acc[g][0] = acc[g][1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const __m256 dx = _mm256_set1_ps(xs[b].d);
      const uint8_t* q[G];
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) q[g] = quants[g] + b * Pass::kQuantBytes;
      __m256i s[G][2];
      // Q4_1's BlockSum holds +sum(x) for its minima, not an offset's bias.
      Decode::template dot_groups<G>(q, x[b].qs, Pass::kMinima ? 0 : xs[b].bias, s);
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) {
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          const __m256 dw = _mm256_cvtph_ps(
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(scales[g] + b * 16 + 8 * h)));
          acc[g][h] =
              _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[g][h]), _mm256_mul_ps(dw, dx), acc[g][h]);
          if constexpr (Pass::kMinima) {
            const __m256 m = _mm256_cvtph_ps(_mm_loadu_si128(
                reinterpret_cast<const __m128i*>(scales[g] + (nb + b) * 16 + 8 * h)));
            acc[g][h] = _mm256_fmadd_ps(m, _mm256_set1_ps(xs[b].d_bias), acc[g][h]);
          }
        }
      }
    }
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) {
      const __m256 both[2][1] = {{acc[g][0]}, {acc[g][1]}};
      store<1>(a, r + 16 * g, 0, g + 1 == G ? n_valid_last : 16, both);
    }
  }

  static void decode(const MatmulArgs& a, int64_t r0, int64_t r1) {
    auto n_valid = [&](int64_t r) { return static_cast<int>(std::min<int64_t>(16, r1 - r)); };
    int64_t r = r0;
    for (; r + 48 < r1; r += 64) decode_groups<4>(a, r, n_valid(r + 48));
    for (; r < r1; r += 16) decode_groups<1>(a, r, n_valid(r));
  }
};

// ggml's AVX2 quantize_row_q8_0: the same arithmetic as the portable
// quantize_row_q8_0_act, so the two agree bit for bit.
void convert_q8_0_avx2(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_0*>(dst);
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t i = 0; i < n / 32; ++i) {
    __m256 v0 = _mm256_loadu_ps(x + i * 32);
    __m256 v1 = _mm256_loadu_ps(x + i * 32 + 8);
    __m256 v2 = _mm256_loadu_ps(x + i * 32 + 16);
    __m256 v3 = _mm256_loadu_ps(x + i * 32 + 24);
    __m256 max_abs = _mm256_andnot_ps(sign_bit, v0);
    max_abs = _mm256_max_ps(max_abs, _mm256_andnot_ps(sign_bit, v1));
    max_abs = _mm256_max_ps(max_abs, _mm256_andnot_ps(sign_bit, v2));
    max_abs = _mm256_max_ps(max_abs, _mm256_andnot_ps(sign_bit, v3));
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(max_abs, 1), _mm256_castps256_ps128(max_abs));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    y[i].d = static_cast<uint16_t>(_cvtss_sh(amax / 127.f, _MM_FROUND_TO_NEAREST_INT));
    const __m256 mul = _mm256_set1_ps(amax != 0.0f ? 127.f / amax : 0.0f);
    constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    const __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, mul), kRound));
    const __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, mul), kRound));
    const __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, mul), kRound));
    const __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, mul), kRound));
    // packs works within 128-bit lanes; the permute restores element order.
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[i].qs), _mm256_permutevar8x32_epi32(p, perm));
  }
}

// Rounds to fp16 and back with F16C (round to nearest even, as f32_to_fp16).
void convert_f16_avx2(const float* x, void* dst, int64_t n) {
  auto* d = static_cast<float*>(dst);
  for (int64_t i = 0; i < n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
    _mm256_storeu_ps(d + i, _mm256_cvtph_ps(h));
  }
}

}  // namespace

const KernelTable& avx2_kernels() {
  static const KernelTable table = [] {
    KernelTable t;
    t.f32 = {rows_kernel<FloatKernel<LoadF32, LoadF32>, 4, 3, 4>, nullptr, 4};
    t.f16 = {rows_kernel<FloatKernel<LoadF16, LoadF32>, 4, 3, 4>, convert_f16_avx2, 4};
    t.bf16 = {rows_kernel<FloatKernel<LoadBF16, LoadBF16>, 4, 3, 4>, nullptr, 4};
    t.q8_0 = {rows_kernel<QuantKernel<BlockQ8_0>, 4, 2, 4>, convert_q8_0_avx2, 4,
              packed_rows_kernel<PackedKernel<PackedQ8Pass<2>, PackedQ8Decode>, 8>};
    t.q4_0 = {rows_kernel<QuantKernel<BlockQ4_0>, 4, 2, 4>, convert_q8_0_avx2, 4,
              packed_rows_kernel<PackedKernel<PackedQ4Pass<2>, PackedQ4Decode>, 4>};
    t.q5_0 = {rows_kernel<QuantKernel<BlockQ5_0>, 8, 2, 4>, convert_q8_0_avx2, 4,
              packed_rows_kernel<PackedKernel<PackedQ5Pass<1>, PackedQ5Decode>, 4>};
    add_avx2_quant_kernels(t);
    t.q4_1.packed_rows =
        packed_rows_kernel<PackedKernel<PackedQ4_1Pass<2>, PackedQ4Decode>, 4>;
    return t;
  }();
  return table;
}

}  // namespace tandem::kernels::internal
