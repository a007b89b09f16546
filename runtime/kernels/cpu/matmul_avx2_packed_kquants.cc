// AVX2 kernels for packed Q4_K, Q5_K and Q6_K (Layout::kPacked, formats in
// matmul_kernels.h): 8 rows in the 8 int32 lanes of a register, so that each
// 4-byte activation broadcast feeds 8 rows, the sub-block scales apply to
// 8 rows with one madd, and no horizontal sums are needed. One-token
// products read four 16-row groups side by side (four sequential streams,
// left to the hardware prefetchers). Compiled with -mavx2 -mfma
// -mf16c like matmul_avx2.cc, and entered only after cpuid reported those
// features (matmul.cc).

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

// Pins v in a register at this point of the program. GCC otherwise
// reassociates the add chains of the batch kernels into trees whose many
// partial sums spill to the stack (and run slower than the chains).
inline void pin(__m256i& v) { asm("" : "+x"(v)); }

inline __m256i load256(const void* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

inline int64_t load_i64(const void* p) {
  int64_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <class Block>
inline const Block* block_row(const uint8_t* base, size_t stride, int64_t i) {
  return reinterpret_cast<const Block*>(base + i * stride);
}

// kFive: packed Q5_K, whose slab bytes hold a whole 5-bit quant and 3 bits
// of another, the other's top 2 bits coming from the half's 32 bytes of top
// bits. Its 5-bit products reach 2 * 31 * 127 per maddubs pair, so the int16
// sums of a sub-block are split in two before the scale's madd.
template <bool kFive>
struct PackedQ45KKernel {
  static constexpr size_t kBytes = kFive ? kPackedQ5KBytes : kPackedQ4KBytes;

  // The quants of slab k's byte v as the unsigned maddubs operands for the
  // activation quads 4k (lo) and 16 + 4k (hi); `top` holds Q5_K's top bits.
  static inline void unpack(__m256i v, __m256i top, int k, __m256i& lo, __m256i& hi) {
    if constexpr (kFive) {
      unpack_five_bits(v, top, k, lo, hi);
    } else {
      unpack_nibbles(v, lo, hi);
    }
  }

  // The 6-bit scales and minima of one half (8 rows) of a packed super-block
  // as bytes: sc[8s + i] and m[8s + i] for sub-block s, row i.
  struct HalfScales {
    alignas(32) uint8_t sc[64];
    alignas(32) uint8_t m[64];
  };

  static inline void decode_scales(const uint8_t* o, int h, HalfScales& out) {
    const __m256i low6 = _mm256_set1_epi8(0x3F);
    const __m256i low2 = _mm256_set1_epi8(0x03);
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m256i sc0 = load256(o + 64 + 64 * h);
    const __m256i sc1 = load256(o + 64 + 64 * h + 32);
    const __m256i mh = load256(o + 192 + 32 * h);
    _mm256_store_si256(reinterpret_cast<__m256i*>(out.sc), _mm256_and_si256(sc0, low6));
    _mm256_store_si256(reinterpret_cast<__m256i*>(out.sc + 32), _mm256_and_si256(sc1, low6));
    const __m256i m0 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(sc0, 6), low2),
                                       _mm256_slli_epi16(_mm256_and_si256(mh, low4), 2));
    const __m256i m1 =
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(sc1, 6), low2),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(mh, 4), low4), 2));
    _mm256_store_si256(reinterpret_cast<__m256i*>(out.m), m0);
    _mm256_store_si256(reinterpret_cast<__m256i*>(out.m + 32), m1);
  }

  // Row i's byte of 8 (broadcast to both 128-bit lanes) as the low byte of
  // both int16 halves of int32 lane i: the madd operand that scales the
  // lane's two pair sums by it.
  static inline __m256i scale_pairs(const uint8_t* p) {
    const __m256i b = _mm256_set1_epi64x(load_i64(p));
    return _mm256_shuffle_epi8(
        b, _mm256_setr_epi8(0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1, 3, -1, 3, -1, 4, -1, 4,
                            -1, 5, -1, 5, -1, 6, -1, 6, -1, 7, -1, 7, -1));
  }

  // The minima (< 64) of sub-blocks 2p and 2p + 1 of row i as the int16 pair
  // of lane i (from the 16 bytes at p: 8 rows of 2p, then 8 of 2p + 1).
  static inline __m256i minima_pairs(const uint8_t* p) {
    const __m256i b =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_shuffle_epi8(
        b, _mm256_setr_epi8(0, -1, 8, -1, 1, -1, 9, -1, 2, -1, 10, -1, 3, -1, 11, -1, 4, -1, 12,
                            -1, 5, -1, 13, -1, 6, -1, 14, -1, 7, -1, 15, -1));
  }

  // The sums of x over sub-blocks 2p and 2p + 1 as the int16 pair of int32
  // p (|.| < 2^13), for the madd with minima_pairs.
  static inline void subblock_pair_sums(const BlockQ8_K& xb, int32_t (&bs)[4]) {
    const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xb.bsums));
    const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xb.bsums + 8));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(bs), _mm_hadd_epi16(lo, hi));
  }

  static inline __m256i broadcast4(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, sizeof(v));
    return _mm256_set1_epi32(v);
  }

  // Adds super-block b (packed at `o`) of 16 rows times T tokens to acc:
  // per 8-row half, each weight load feeds all T tokens, whose int16 and
  // int32 sums stay in registers (pinned, see pin()); the minima's term
  // follows the sub-block loop so that its sums are not live during it.
  template <int T>
  [[gnu::always_inline]] static inline void superblock(const uint8_t* o,
                                                       const BlockQ8_K* const* x, int64_t b,
                                                       __m256 (&acc)[2][T]) {
    int32_t bs[T][4];
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) subblock_pair_sums(x[j][b], bs[j]);
    for (int h = 0; h < 2; ++h) {
      HalfScales hs;
      decode_scales(o, h, hs);
      __m256i sumi[T];
      for (int s = 0; s < 8; ++s) {
        const uint8_t* q = o + packed_k_subblock(kFive, s) + 32 * h;
        const __m256i top = kFive ? load256(q + 256) : __m256i{};
        __m256i p[T], p2[T];
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
          const __m256i v = load256(q + 64 * k);
          __m256i lo, hi;
          unpack(v, top, k, lo, hi);
#pragma GCC unroll 8
          for (int j = 0; j < T; ++j) {
            const int8_t* xq = x[j][b].qs + 32 * s + 4 * k;
            const __m256i d = _mm256_add_epi16(_mm256_maddubs_epi16(lo, broadcast4(xq)),
                                               _mm256_maddubs_epi16(hi, broadcast4(xq + 16)));
            if (kFive && k >= 2) {
              p2[j] = k == 2 ? d : _mm256_add_epi16(p2[j], d);
              pin(p2[j]);
            } else {
              p[j] = k == 0 ? d : _mm256_add_epi16(p[j], d);
              pin(p[j]);
            }
          }
        }
        const __m256i sc_pair = scale_pairs(hs.sc + 8 * s);
#pragma GCC unroll 8
        for (int j = 0; j < T; ++j) {
          __m256i v = _mm256_madd_epi16(p[j], sc_pair);
          if constexpr (kFive) v = _mm256_add_epi32(v, _mm256_madd_epi16(p2[j], sc_pair));
          sumi[j] = s == 0 ? v : _mm256_add_epi32(sumi[j], v);
          pin(sumi[j]);
        }
      }
      // The minima pairs times the pairs of sub-block sums of x: one madd
      // per two sub-blocks.
      __m256i summ[T];
#pragma GCC unroll 4
      for (int p = 0; p < 4; ++p) {
        const __m256i m = minima_pairs(hs.m + 16 * p);
#pragma GCC unroll 8
        for (int j = 0; j < T; ++j) {
          const __m256i v = _mm256_madd_epi16(m, _mm256_set1_epi32(bs[j][p]));
          summ[j] = p == 0 ? v : _mm256_add_epi32(summ[j], v);
          pin(summ[j]);
        }
      }
      const __m256 d =
          _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(o + 16 * h)));
      const __m256 dmin =
          _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(o + 32 + 16 * h)));
#pragma GCC unroll 8
      for (int j = 0; j < T; ++j) {
        const __m256 dx = _mm256_set1_ps(x[j][b].d);
        acc[h][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[j]), _mm256_mul_ps(d, dx), acc[h][j]);
        acc[h][j] =
            _mm256_fnmadd_ps(_mm256_cvtepi32_ps(summ[j]), _mm256_mul_ps(dmin, dx), acc[h][j]);
      }
    }
  }

  // Super-block b of G groups for one token. The sub-block loop is the outer
  // one: each sub-block's activation broadcasts serve both halves of all G
  // groups, and the G streams advance together, a sub-block at a time. Each
  // scale pair is one shuffle, and the minima's term is taken once per
  // super-block (one madd per two sub-blocks), as in superblock<T>.
  template <int G>
  [[gnu::always_inline]] static inline void superblock_groups(const uint8_t* const (&o)[G],
                                                              const BlockQ8_K& xb,
                                                              __m256 (&acc)[G][2]) {
    HalfScales hs[G][2];
    __m256i sumi[G][2];
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) {
      decode_scales(o[g], 0, hs[g][0]);
      decode_scales(o[g], 1, hs[g][1]);
      sumi[g][0] = sumi[g][1] = _mm256_setzero_si256();
    }
    for (int s = 0; s < 8; ++s) {
      __m256i xq[8];
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        xq[k] = broadcast4(xb.qs + 32 * s + 4 * k);
        xq[k + 4] = broadcast4(xb.qs + 32 * s + 16 + 4 * k);
      }
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) {
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          const uint8_t* q = o[g] + packed_k_subblock(kFive, s) + 32 * h;
          const __m256i top = kFive ? load256(q + 256) : __m256i{};
          __m256i p = _mm256_setzero_si256(), p2 = _mm256_setzero_si256();
#pragma GCC unroll 4
          for (int k = 0; k < 4; ++k) {
            const __m256i v = load256(q + 64 * k);
            __m256i lo, hi;
            unpack(v, top, k, lo, hi);
            const __m256i d = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xq[k]),
                                               _mm256_maddubs_epi16(hi, xq[k + 4]));
            if (kFive && k >= 2) {
              p2 = k == 2 ? d : _mm256_add_epi16(p2, d);
            } else {
              p = k == 0 ? d : _mm256_add_epi16(p, d);
            }
          }
          const __m256i sc_pair = scale_pairs(hs[g][h].sc + 8 * s);
          __m256i v = _mm256_madd_epi16(p, sc_pair);
          if constexpr (kFive) v = _mm256_add_epi32(v, _mm256_madd_epi16(p2, sc_pair));
          sumi[g][h] = _mm256_add_epi32(sumi[g][h], v);
        }
      }
    }
    int32_t bs[4];
    subblock_pair_sums(xb, bs);
    const __m256 dx = _mm256_set1_ps(xb.d);
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) {
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        __m256i summ = _mm256_madd_epi16(minima_pairs(hs[g][h].m), _mm256_set1_epi32(bs[0]));
#pragma GCC unroll 3
        for (int p = 1; p < 4; ++p) {
          summ = _mm256_add_epi32(summ, _mm256_madd_epi16(minima_pairs(hs[g][h].m + 16 * p),
                                                          _mm256_set1_epi32(bs[p])));
        }
        const __m256 d =
            _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(o[g] + 16 * h)));
        const __m256 dmin = _mm256_cvtph_ps(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(o[g] + 32 + 16 * h)));
        acc[g][h] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[g][h]), _mm256_mul_ps(d, dx), acc[g][h]);
        acc[g][h] =
            _mm256_fnmadd_ps(_mm256_cvtepi32_ps(summ), _mm256_mul_ps(dmin, dx), acc[g][h]);
      }
    }
  }

  // Stores the first n_valid of the 16 rows (the padding rows of the last
  // group have no place in y).
  template <int T>
  static inline void store(const MatmulArgs& a, int64_t r, int64_t t, int n_valid,
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

  template <int T>
  static void tile(const MatmulArgs& a, int64_t r, int64_t t, int n_valid) {
    const int64_t nb = a.n_cols / kQK_K;
    const uint8_t* group = a.w + (r / 16) * a.w_stride;
    const BlockQ8_K* x[T];
    for (int j = 0; j < T; ++j) x[j] = block_row<BlockQ8_K>(a.x, a.x_stride, t + j);
    __m256 acc[2][T];
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) acc[0][j] = acc[1][j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) superblock<T>(group + b * kBytes, x, b, acc);
    store<T>(a, r, t, n_valid, acc);
  }

  // One token, G groups side by side: G sequential streams in flight (one
  // core needs several to approach the memory bandwidth).
  template <int G>
  static void decode_groups(const MatmulArgs& a, int64_t r, int n_valid_last) {
    const int64_t nb = a.n_cols / kQK_K;
    const auto* x = reinterpret_cast<const BlockQ8_K*>(a.x);
    __m256 acc[G][2];
    for (int g = 0; g < G; ++g) acc[g][0] = acc[g][1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* o[G];
      for (int g = 0; g < G; ++g) o[g] = a.w + (r / 16 + g) * a.w_stride + b * kBytes;
      superblock_groups<G>(o, x[b], acc);
    }
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

// Packed Q6_K (format in matmul_kernels.h), like PackedQ45KKernel: 8 rows in
// the int32 lanes. Two maddubs results add up in int16 (2 * 2 * 63 * 127 <
// 2^15), and q - 32 is folded in per sub-block as
// scale * (-16 * sum(x)) * 2, one more madd on int16 pairs.
struct PackedQ6KKernel {
  static inline __m256i broadcast4(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, sizeof(v));
    return _mm256_set1_epi32(v);
  }

  // The 6-bit quants of one 8-row half of sub-block sub, in the order of
  // the activation quads 0, 4, 8 and 12.
  struct Quants {
    __m256i q0, q4, q8, q12;
  };
  static inline Quants unpack(const uint8_t* sub, int h) {
    const __m256i low6 = _mm256_set1_epi8(0x3F);
    const __m256i v0 = load256(sub + 32 * h);
    const __m256i v1 = load256(sub + 64 + 32 * h);
    const __m256i v2 = load256(sub + 128 + 32 * h);
    Quants q;
    q.q0 = _mm256_and_si256(v0, low6);
    q.q4 = _mm256_and_si256(v1, low6);
    q.q12 = _mm256_and_si256(v2, low6);
    // Bits 6 and 7 of each slab to bits 0-1, 2-3 and 4-5 of quad 2.
    q.q8 = _mm256_or_si256(
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v0, 6), _mm256_set1_epi8(0x03)),
                        _mm256_and_si256(_mm256_srli_epi16(v1, 4), _mm256_set1_epi8(0x0C))),
        _mm256_and_si256(_mm256_srli_epi16(v2, 2), _mm256_set1_epi8(0x30)));
    return q;
  }

  // The int8 scales of sub-block s for the half's 8 rows as int16 pairs.
  static inline __m256i scale_pairs(const uint8_t* o, int h, int s) {
    const __m256i sc = _mm256_cvtepi8_epi32(
        _mm_loadl_epi64(reinterpret_cast<const __m128i*>(o + 32 + 128 * h + 8 * s)));
    return _mm256_blend_epi16(sc, _mm256_slli_epi32(sc, 16), 0xAA);
  }

  // Per token: -16 * bsums[s] as an int16 pair, for each sub-block.
  static inline void offsets(const BlockQ8_K& xb, int32_t (&out)[16]) {
    for (int s = 0; s < 16; ++s) {
      const auto v = static_cast<uint16_t>(-16 * xb.bsums[s]);
      out[s] = static_cast<int32_t>(static_cast<uint32_t>(v) * 0x10001u);
    }
  }

  [[gnu::always_inline]] static inline __m256i dot(const Quants& q, __m256i scp, int32_t offset,
                                                   const int8_t* xq, __m256i sumi) {
    const __m256i p1 = _mm256_add_epi16(_mm256_maddubs_epi16(q.q0, broadcast4(xq)),
                                        _mm256_maddubs_epi16(q.q4, broadcast4(xq + 4)));
    const __m256i p2 = _mm256_add_epi16(_mm256_maddubs_epi16(q.q8, broadcast4(xq + 8)),
                                        _mm256_maddubs_epi16(q.q12, broadcast4(xq + 12)));
    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p1, scp));
    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p2, scp));
    return _mm256_add_epi32(sumi, _mm256_madd_epi16(scp, _mm256_set1_epi32(offset)));
  }

  template <int T>
  [[gnu::always_inline]] static inline void superblock(const uint8_t* o,
                                                       const BlockQ8_K* const* x, int64_t b,
                                                       __m256 (&acc)[2][T]) {
    int32_t off[T][16];
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) offsets(x[j][b], off[j]);
    // The halves in turn, not unrolled: acc stays in memory while the T
    // int32 sums and a sub-block's quants take the registers.
    for (int h = 0; h < 2; ++h) {
      __m256i sumi[T];
#pragma GCC unroll 8
      for (int j = 0; j < T; ++j) sumi[j] = _mm256_setzero_si256();
      for (int s = 0; s < 16; ++s) {
        const Quants q = unpack(o + 288 + 192 * s, h);
        const __m256i scp = scale_pairs(o, h, s);
#pragma GCC unroll 8
        for (int j = 0; j < T; ++j) {
          sumi[j] = dot(q, scp, off[j][s], x[j][b].qs + 16 * s, sumi[j]);
          pin(sumi[j]);
        }
      }
      const __m256 d =
          _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(o + 16 * h)));
#pragma GCC unroll 8
      for (int j = 0; j < T; ++j) {
        acc[h][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[j]),
                                    _mm256_mul_ps(d, _mm256_set1_ps(x[j][b].d)), acc[h][j]);
      }
    }
  }

  // Super-block b of G groups for one token: the sub-block loop outside,
  // so that the G streams advance together, 192 bytes at a time, on the
  // hardware prefetchers alone (1.2x the group-by-group loop with software
  // prefetches), and each activation broadcast serves both halves of all G
  // groups.
  template <int G>
  [[gnu::always_inline]] static inline void superblock_groups(const uint8_t* const (&o)[G],
                                                              const BlockQ8_K& xb,
                                                              __m256 (&acc)[G][2]) {
    int32_t off[16];
    offsets(xb, off);
    __m256i sumi[G][2];
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) sumi[g][0] = sumi[g][1] = _mm256_setzero_si256();
    for (int s = 0; s < 16; ++s) {
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) {
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          sumi[g][h] = dot(unpack(o[g] + 288 + 192 * s, h), scale_pairs(o[g], h, s), off[s],
                           xb.qs + 16 * s, sumi[g][h]);
        }
      }
    }
    const __m256 dx = _mm256_set1_ps(xb.d);
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) {
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const __m256 d =
            _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(o[g] + 16 * h)));
        acc[g][h] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[g][h]), _mm256_mul_ps(d, dx), acc[g][h]);
      }
    }
  }

  template <int T>
  static void tile(const MatmulArgs& a, int64_t r, int64_t t, int n_valid) {
    const int64_t nb = a.n_cols / kQK_K;
    const uint8_t* group = a.w + (r / 16) * a.w_stride;
    const BlockQ8_K* x[T];
    for (int j = 0; j < T; ++j) x[j] = block_row<BlockQ8_K>(a.x, a.x_stride, t + j);
    __m256 acc[2][T];
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) acc[0][j] = acc[1][j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) superblock<T>(group + b * kPackedQ6KBytes, x, b, acc);
    PackedQ45KKernel<false>::store<T>(a, r, t, n_valid, acc);
  }

  template <int G>
  static void decode_groups(const MatmulArgs& a, int64_t r, int n_valid_last) {
    const int64_t nb = a.n_cols / kQK_K;
    const auto* x = reinterpret_cast<const BlockQ8_K*>(a.x);
    __m256 acc[G][2];
    for (int g = 0; g < G; ++g) acc[g][0] = acc[g][1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* o[G];
      for (int g = 0; g < G; ++g) o[g] = a.w + (r / 16 + g) * a.w_stride + b * kPackedQ6KBytes;
      superblock_groups<G>(o, x[b], acc);
    }
    for (int g = 0; g < G; ++g) {
      const __m256 both[2][1] = {{acc[g][0]}, {acc[g][1]}};
      PackedQ45KKernel<false>::store<1>(a, r + 16 * g, 0, g + 1 == G ? n_valid_last : 16, both);
    }
  }

  static void decode(const MatmulArgs& a, int64_t r0, int64_t r1) {
    auto n_valid = [&](int64_t r) { return static_cast<int>(std::min<int64_t>(16, r1 - r)); };
    int64_t r = r0;
    for (; r + 48 < r1; r += 64) decode_groups<4>(a, r, n_valid(r + 48));
    for (; r < r1; r += 16) decode_groups<1>(a, r, n_valid(r));
  }
};

}  // namespace

void add_avx2_packed_kquant_kernels(KernelTable& t) {
  t.q4_k.packed_rows = packed_rows_kernel<PackedQ45KKernel<false>, 4>;
  t.q5_k.packed_rows = packed_rows_kernel<PackedQ45KKernel<true>, 4>;
  // Q6_K's per-token state is one int32 sum, so 8 tokens fit the registers
  // and share each sub-block's unpacking (11% faster than 4 here; Q4_K, with
  // an int16 and an int32 sum per token, gains nothing from 6).
  t.q6_k.packed_rows = packed_rows_kernel<PackedQ6KKernel, 8>;
}

}  // namespace tandem::kernels::internal
