// AVX-512 kernels (F, BW, VL; VNNI and BF16 when the CPU has them). Compiled
// with -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mavx512bf16 -mavx2 -mfma
// -mf16c and entered only after cpuid reported F, BW and VL (matmul.cc). The
// VNNI and BF16 instructions are confined to the kernels that
// avx512_kernels() hands out only when those features are present; without
// VNNI the quantized types use the AVX2 kernels.
//
// Quantized blocks are processed two at a time in a zmm register (two 32-byte
// halves). vpdpbusd multiplies unsigned by signed bytes, so the weights are
// made unsigned by an offset that is subtracted once per token and block pair:
//   q8_0: sum((w + 128) * x) - 128 * sum(x)
//   q4_0: sum(nibble * x) - 8 * sum(x)
// The correction seeds the accumulator of vpdpbusd, so it costs nothing per
// row. The int32 sums are exact; only the per-block float scaling rounds, as
// in ggml.

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "runtime/kernels/cpu/matmul_kernels.h"

namespace tandem::kernels::internal {
namespace {

#include "runtime/kernels/cpu/tile_driver.inc"

template <class Block>
inline const Block* block_row(const uint8_t* base, size_t stride, int64_t i) {
  return reinterpret_cast<const Block*>(base + i * stride);
}

// 32 quants of block b and, if kPair, of block b + 1 in the upper half
// (zeros otherwise).
template <bool kPair>
inline __m512i load_q8(const BlockQ8_0* b) {
  const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[0].qs));
  if constexpr (kPair) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo),
                              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[1].qs)), 1);
  } else {
    return _mm512_zextsi256_si512(lo);
  }
}

// The scales of blocks b and b + 1 as 8 + 8 lanes (upper lanes zero without kPair).
template <bool kPair, class Block>
inline __m512 load_scales(const Block* b) {
  const __m128i lo = _mm_set1_epi16(static_cast<short>(b[0].d));
  const __m128i hi = kPair ? _mm_set1_epi16(static_cast<short>(b[1].d)) : _mm_setzero_si128();
  return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
}

// Unsigned weights for vpdpbusd and the offset they carry.
template <bool kPair>
inline __m512i load_unsigned(const BlockQ8_0* b) {
  return _mm512_xor_si512(load_q8<kPair>(b), _mm512_set1_epi8(static_cast<char>(0x80)));
}
template <bool kPair>
inline __m512i load_unsigned(const BlockQ4_0* b) {
  const __m128i p0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[0].qs));
  const __m256i lo = _mm256_set_m128i(_mm_srli_epi16(p0, 4), p0);
  __m512i both;
  if constexpr (kPair) {
    const __m128i p1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[1].qs));
    both = _mm512_inserti64x4(_mm512_castsi256_si512(lo),
                              _mm256_set_m128i(_mm_srli_epi16(p1, 4), p1), 1);
  } else {
    both = _mm512_zextsi256_si512(lo);
  }
  return _mm512_and_si512(both, _mm512_set1_epi8(0x0F));
}
inline constexpr char kOffset(const BlockQ8_0*) { return static_cast<char>(128); }
inline constexpr char kOffset(const BlockQ4_0*) { return 8; }

// By hand: GCC 12's _mm512_reduce_add_ps trips -Wuninitialized inside its header.
inline float hsum(__m512 v) {
  const __m512 s = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
  const __m256 h = _mm512_castps512_ps256(s);
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

// How far ahead (bytes) each weight row is prefetched. Hardware prefetchers
// follow the row streams, but not far enough ahead for a kernel that spends
// several instructions per 34-byte block.
inline constexpr int kPrefetch = 512;
// The same for each of the streams of the packed one-token kernel: about the
// bytes in flight per stream that cover the memory latency at full speed.
inline constexpr int kPackedPrefetch = 1024;

template <class WBlock>
struct VnniKernel {
  template <bool kPair, int R, int T>
  static inline void step(const WBlock* const* w, const BlockQ8_0* const* x, int64_t b,
                          __m512 (&acc)[R][T]) {
    const __m512i offset = _mm512_set1_epi8(kOffset(static_cast<const WBlock*>(nullptr)));
    __m512i uw[R];
    __m512 dw[R];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      if constexpr (kPrefetch > 0) {
        _mm_prefetch(reinterpret_cast<const char*>(w[i] + b) + 2 * kPrefetch, _MM_HINT_T0);
      }
      uw[i] = load_unsigned<kPair>(w[i] + b);
      dw[i] = load_scales<kPair>(w[i] + b);
    }
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) {
      const __m512i xq = load_q8<kPair>(x[j] + b);
      const __m512 dx = load_scales<kPair>(x[j] + b);
      const __m512i corr = _mm512_sub_epi32(
          _mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset, xq));
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const __m512i dot = _mm512_dpbusd_epi32(corr, uw[i], xq);
        acc[i][j] = _mm512_fmadd_ps(_mm512_mul_ps(dw[i], dx), _mm512_cvtepi32_ps(dot), acc[i][j]);
      }
    }
  }

  template <int R, int T>
  static void tile(const MatmulArgs& a, int64_t r, int64_t t) {
    const int64_t nb = a.n_cols / 32;
    const WBlock* w[R];
    const BlockQ8_0* x[T];
    for (int i = 0; i < R; ++i) w[i] = block_row<WBlock>(a.w, a.w_stride, r + i);
    for (int j = 0; j < T; ++j) x[j] = block_row<BlockQ8_0>(a.x, a.x_stride, t + j);
    __m512 acc[R][T];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) acc[i][j] = _mm512_setzero_ps();
    }
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) step<true, R, T>(w, x, b, acc);
    if (b < nb) step<false, R, T>(w, x, b, acc);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) a.y[(t + j) * a.ldy + r + i] = hsum(acc[i][j]);
    }
  }
};

inline int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// The 8 slabs of one packed block column as unsigned bytes for vpdpbusd:
// slab k's lane i holds row i's weights of columns 4k..4k+3.
template <class WBlock>
struct PackedUnsigned;
template <>
struct PackedUnsigned<BlockQ8_0> {
  static constexpr size_t kQuantBytes = 16 * 32;
  static inline void load(const uint8_t* q, __m512i (&u)[8]) {
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) u[k] = _mm512_xor_si512(_mm512_loadu_si512(q + 64 * k), flip);
  }
};
template <>
struct PackedUnsigned<BlockQ4_0> {
  static constexpr size_t kQuantBytes = 16 * 16;
  static inline void load(const uint8_t* q, __m512i (&u)[8]) {
    const __m512i mask = _mm512_set1_epi8(0x0F);
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const __m512i v = _mm512_loadu_si512(q + 64 * k);
      u[k] = _mm512_and_si512(v, mask);
      u[k + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
    }
  }
};

// Packed Q8_0/Q4_0 with vpdpbusd: 16 rows in the 16 lanes, so each 4-byte
// activation broadcast feeds 16 rows and the result needs no horizontal sum.
// The activation's BlockSum bias seeds the int32 sum, which makes the
// unsigned weights' offset cancel exactly.
template <class WBlock>
struct PackedVnniKernel {
  template <int T>
  static void tile(const MatmulArgs& a, int64_t r, int64_t t, int n_valid) {
    using W = PackedUnsigned<WBlock>;
    const int64_t nb = a.n_cols / 32;
    const uint8_t* group = a.w + (r / 16) * a.w_stride;
    const auto* scales = reinterpret_cast<const uint16_t*>(group);
    const uint8_t* quants = group + nb * 16 * sizeof(uint16_t);
    const BlockQ8_0* x[T];
    const BlockSum* xs[T];
    for (int j = 0; j < T; ++j) {
      const uint8_t* row = a.x + (t + j) * a.x_stride;
      x[j] = reinterpret_cast<const BlockQ8_0*>(row);
      xs[j] = reinterpret_cast<const BlockSum*>(row + a.x_sums_offset);
    }
    __m512 acc[T];
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) acc[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      __m512i u[8];
      W::load(quants + b * W::kQuantBytes, u);
      const __m512 dw =
          _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales + b * 16)));
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) {
        const int8_t* xq = x[j][b].qs;
        // Two chains, so consecutive vpdpbusd do not wait on each other.
        __m512i s0 = _mm512_set1_epi32(xs[j][b].bias);
        __m512i s1 = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int k = 0; k < 8; k += 2) {
          s0 = _mm512_dpbusd_epi32(s0, u[k], _mm512_set1_epi32(load_i32(xq + 4 * k)));
          s1 = _mm512_dpbusd_epi32(s1, u[k + 1], _mm512_set1_epi32(load_i32(xq + 4 * k + 4)));
        }
        const __m512 d = _mm512_mul_ps(dw, _mm512_set1_ps(xs[j][b].d));
        acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), d, acc[j]);
      }
    }
    const __mmask16 mask = static_cast<__mmask16>((1u << n_valid) - 1);
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) _mm512_mask_storeu_ps(a.y + (t + j) * a.ldy + r, mask, acc[j]);
  }

  // One token, G groups side by side. A single core reaches the memory
  // bandwidth only with several streams in flight: one group at a time ran
  // q4_0 decode at about half the bound, four streams with software prefetch
  // at about 75%, eight at 85-100% (tandem bench decode, 1b q4_0, one thread).
  template <int G>
  static void decode_groups(const MatmulArgs& a, int64_t r, int n_valid_last) {
    using W = PackedUnsigned<WBlock>;
    const int64_t nb = a.n_cols / 32;
    const uint16_t* scales[G];
    const uint8_t* quants[G];
    for (int g = 0; g < G; ++g) {
      const uint8_t* group = a.w + (r / 16 + g) * a.w_stride;
      scales[g] = reinterpret_cast<const uint16_t*>(group);
      quants[g] = group + nb * 16 * sizeof(uint16_t);
    }
    const auto* x = reinterpret_cast<const BlockQ8_0*>(a.x);
    const auto* xs = reinterpret_cast<const BlockSum*>(a.x + a.x_sums_offset);
    __m512 acc[G];
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) acc[g] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      __m512i xb[8];
      const int8_t* xq = x[b].qs;
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) xb[k] = _mm512_set1_epi32(load_i32(xq + 4 * k));
      const __m512i bias = _mm512_set1_epi32(xs[b].bias);
      const __m512 dx = _mm512_set1_ps(xs[b].d);
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) {
        const char* ahead = reinterpret_cast<const char*>(quants[g] + b * W::kQuantBytes);
#pragma GCC unroll 8
        for (size_t l = 0; l < W::kQuantBytes; l += 64) {
          _mm_prefetch(ahead + kPackedPrefetch + l, _MM_HINT_T0);
        }
        __m512i u[8];
        W::load(quants[g] + b * W::kQuantBytes, u);
        const __m512 dw = _mm512_cvtph_ps(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales[g] + b * 16)));
        __m512i s0 = bias;
        __m512i s1 = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int k = 0; k < 8; k += 2) {
          s0 = _mm512_dpbusd_epi32(s0, u[k], xb[k]);
          s1 = _mm512_dpbusd_epi32(s1, u[k + 1], xb[k + 1]);
        }
        acc[g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)),
                                 _mm512_mul_ps(dw, dx), acc[g]);
      }
    }
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) {
      const int n = g + 1 == G ? n_valid_last : 16;
      _mm512_mask_storeu_ps(a.y + r + 16 * g, static_cast<__mmask16>((1u << n) - 1), acc[g]);
    }
  }

  static void decode(const MatmulArgs& a, int64_t r0, int64_t r1) {
    auto n_valid = [&](int64_t r) { return static_cast<int>(std::min<int64_t>(16, r1 - r)); };
    int64_t r = r0;
    for (; r + 112 < r1; r += 128) decode_groups<8>(a, r, n_valid(r + 112));
    for (; r + 48 < r1; r += 64) decode_groups<4>(a, r, n_valid(r + 48));
    for (; r < r1; r += 16) decode_groups<1>(a, r, n_valid(r));
  }
};

struct LoadF32 {
  static constexpr int kBytes = 4;
  static __m512 load(const uint8_t* row, int64_t c) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(row) + c);
  }
};
struct LoadF16 {
  static constexpr int kBytes = 2;
  static __m512 load(const uint8_t* row, int64_t c) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(reinterpret_cast<const uint16_t*>(row) + c)));
  }
};
struct LoadBF16 {
  static constexpr int kBytes = 2;
  static __m512 load(const uint8_t* row, int64_t c) {
    const __m256i h = _mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(reinterpret_cast<const uint16_t*>(row) + c));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
};

// Float weights, 16 columns per step; one-token tiles keep two chains per
// output to cover the FMA latency.
template <class WLoad, class XLoad>
struct FloatKernel {
  template <int R, int T>
  static void tile(const MatmulArgs& a, int64_t r, int64_t t) {
    constexpr int U = T == 1 ? 2 : 1;
    const uint8_t* w[R];
    const uint8_t* x[T];
    for (int i = 0; i < R; ++i) w[i] = a.w + (r + i) * a.w_stride;
    for (int j = 0; j < T; ++j) x[j] = a.x + (t + j) * a.x_stride;
    __m512 acc[R][T][U];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) {
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) acc[i][j][u] = _mm512_setzero_ps();
      }
    }
    // n_cols is a multiple of 32, so whole steps of 16 * U always fit.
    for (int64_t c = 0; c < a.n_cols; c += 16 * U) {
      if constexpr (T == 1 && kPrefetch > 0) {
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i) {
          _mm_prefetch(reinterpret_cast<const char*>(w[i]) + c * WLoad::kBytes + 2 * kPrefetch,
                       _MM_HINT_T0);
        }
      }
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) {
        __m512 xv[T];
#pragma GCC unroll 16
        for (int j = 0; j < T; ++j) xv[j] = XLoad::load(x[j], c + 16 * u);
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i) {
          const __m512 wv = WLoad::load(w[i], c + 16 * u);
#pragma GCC unroll 16
          for (int j = 0; j < T; ++j) acc[i][j][u] = _mm512_fmadd_ps(wv, xv[j], acc[i][j][u]);
        }
      }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) {
        __m512 s = acc[i][j][0];
        if constexpr (U == 2) s = _mm512_add_ps(s, acc[i][j][1]);
        a.y[(t + j) * a.ldy + r + i] = hsum(s);
      }
    }
  }
};

// bf16 x bf16 with vdpbf16ps: 32 columns (16 pairs) per instruction. The
// products of two bf16 values are exact in f32.
struct Bf16DotKernel {
  template <int R, int T>
  static void tile(const MatmulArgs& a, int64_t r, int64_t t) {
    constexpr int U = T == 1 ? 2 : 1;
    const uint16_t* w[R];
    const uint16_t* x[T];
    for (int i = 0; i < R; ++i)
      w[i] = reinterpret_cast<const uint16_t*>(a.w + (r + i) * a.w_stride);
    for (int j = 0; j < T; ++j)
      x[j] = reinterpret_cast<const uint16_t*>(a.x + (t + j) * a.x_stride);
    __m512 acc[R][T][U];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) {
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) acc[i][j][u] = _mm512_setzero_ps();
      }
    }
    auto step = [&](int64_t c, int u) {
      __m512bh xv[T];
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) xv[j] = (__m512bh)_mm512_loadu_si512(x[j] + c);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const __m512bh wv = (__m512bh)_mm512_loadu_si512(w[i] + c);
#pragma GCC unroll 16
        for (int j = 0; j < T; ++j) acc[i][j][u] = _mm512_dpbf16_ps(acc[i][j][u], wv, xv[j]);
      }
    };
    int64_t c = 0;
    for (; c + 32 * U <= a.n_cols; c += 32 * U) {
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) step(c + 32 * u, u);
    }
    if (c < a.n_cols) step(c, 0);  // n_cols is a multiple of 32, not of 64
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) {
        __m512 s = acc[i][j][0];
        if constexpr (U == 2) s = _mm512_add_ps(s, acc[i][j][1]);
        a.y[(t + j) * a.ldy + r + i] = hsum(s);
      }
    }
  }
};

}  // namespace

const KernelTable& avx512_kernels(bool has_vnni, bool has_bf16) {
  // Indexed by 2 * has_vnni + has_bf16.
  static const std::array<KernelTable, 4> tables = [] {
    std::array<KernelTable, 4> out;
    const KernelTable& avx2 = avx2_kernels();  // AVX-512 here implies AVX2 (matmul.cc)
    for (int vnni = 0; vnni < 2; ++vnni) {
      for (int bf16 = 0; bf16 < 2; ++bf16) {
        KernelTable& t = out[2 * vnni + bf16];
        t.f32 = {rows_kernel<FloatKernel<LoadF32, LoadF32>, 4, 4, 4>, nullptr, 4};
        t.f16 = {rows_kernel<FloatKernel<LoadF16, LoadF32>, 4, 4, 4>, avx2.f16.convert, 4};
        t.bf16 =
            bf16 ? TypeKernels{rows_kernel<Bf16DotKernel, 4, 4, 4>, nullptr, 4}
                 : TypeKernels{rows_kernel<FloatKernel<LoadBF16, LoadBF16>, 4, 4, 4>, nullptr, 4};
        if (vnni) {
          t.q8_0 = {rows_kernel<VnniKernel<BlockQ8_0>, 4, 4, 4>, avx2.q8_0.convert, 4,
                    packed_rows_kernel<PackedVnniKernel<BlockQ8_0>, 8>};
          t.q4_0 = {rows_kernel<VnniKernel<BlockQ4_0>, 4, 4, 4>, avx2.q4_0.convert, 4,
                    packed_rows_kernel<PackedVnniKernel<BlockQ4_0>, 8>};
        } else {
          t.q8_0 = avx2.q8_0;
          t.q4_0 = avx2.q4_0;
        }
        t.q4_1 = avx2.q4_1;
        t.q5_0 = avx2.q5_0;
        t.q4_k = avx2.q4_k;
        t.q5_k = avx2.q5_k;
        t.q6_k = avx2.q6_k;
      }
    }
    return out;
  }();
  return tables[(has_vnni ? 2 : 0) + (has_bf16 ? 1 : 0)];
}

}  // namespace tandem::kernels::internal
