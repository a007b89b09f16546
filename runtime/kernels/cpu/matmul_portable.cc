// Scalar kernels: the fallback on CPUs without a SIMD path, and the baseline
// the SIMD kernels are measured against. Block arithmetic follows ggml's
// scalar vec_dot functions (int32 sum per block, scaled and summed in float).

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "runtime/kernels/cpu/convert.h"
#include "runtime/kernels/cpu/matmul_kernels.h"

namespace tandem::kernels::internal {
namespace {

float dot_f32(const float* w, const float* x, int64_t n) {
  // Four partial sums keep the loop from being one long dependency chain.
  float s[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < n; i += 4) {
    for (int j = 0; j < 4; ++j) s[j] += w[i + j] * x[i + j];
  }
  return (s[0] + s[1]) + (s[2] + s[3]);
}

float dot_f16(const uint16_t* w, const float* x, int64_t n) {
  float s[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < n; i += 4) {
    for (int j = 0; j < 4; ++j) s[j] += fp16_to_f32(w[i + j]) * x[i + j];
  }
  return (s[0] + s[1]) + (s[2] + s[3]);
}

float dot_bf16(const uint16_t* w, const uint16_t* x, int64_t n) {
  float s[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < n; i += 4) {
    for (int j = 0; j < 4; ++j) s[j] += bf16_to_f32(w[i + j]) * bf16_to_f32(x[i + j]);
  }
  return (s[0] + s[1]) + (s[2] + s[3]);
}

float dot_q8_0(const BlockQ8_0* w, const BlockQ8_0* x, int64_t nb) {
  float sum = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t sumi = 0;
    for (int j = 0; j < kQK8_0; ++j) sumi += w[b].qs[j] * x[b].qs[j];
    sum += static_cast<float>(sumi) * (fp16_to_f32(w[b].d) * fp16_to_f32(x[b].d));
  }
  return sum;
}

float dot_q4_0(const BlockQ4_0* w, const BlockQ8_0* x, int64_t nb) {
  constexpr int kHalf = kQK4_0 / 2;
  float sum = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t sumi = 0;
    for (int j = 0; j < kHalf; ++j) {
      sumi += ((w[b].qs[j] & 0x0F) - 8) * x[b].qs[j];
      sumi += ((w[b].qs[j] >> 4) - 8) * x[b].qs[kHalf + j];
    }
    sum += static_cast<float>(sumi) * (fp16_to_f32(w[b].d) * fp16_to_f32(x[b].d));
  }
  return sum;
}

float dot_q5_0(const BlockQ5_0* w, const BlockQ8_0* x, int64_t nb) {
  constexpr int kHalf = 16;
  float sum = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    uint32_t qh;
    std::memcpy(&qh, w[b].qh, sizeof(qh));
    int32_t sumi = 0;
    for (int j = 0; j < kHalf; ++j) {
      const int q0 = ((w[b].qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1) << 4)) - 16;
      const int q1 = ((w[b].qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1) << 4)) - 16;
      sumi += q0 * x[b].qs[j] + q1 * x[b].qs[kHalf + j];
    }
    sum += static_cast<float>(sumi) * (fp16_to_f32(w[b].d) * fp16_to_f32(x[b].d));
  }
  return sum;
}

// The six-bit scales (sc[0..7]) and minima (m[0..7]) of a Q4_K/Q5_K block.
void unpack_scales_k4(const uint8_t* q, int* sc, int* m) {
  for (int s = 0; s < 4; ++s) {
    sc[s] = q[s] & 63;
    m[s] = q[s + 4] & 63;
    sc[s + 4] = (q[s + 8] & 0x0F) | ((q[s] >> 6) << 4);
    m[s + 4] = (q[s + 8] >> 4) | ((q[s + 4] >> 6) << 4);
  }
}

// Q4_K and Q5_K: d * dx * sum_s sc[s] * sum(q * x) - dmin * dx * sum_s m[s] * sum(x),
// with sum(x) of each 32 from the Q8_K bsums. Every int32 sum is exact.
template <class Block>
float dot_q45_k(const Block* w, const BlockQ8_K* x, int64_t nb) {
  float sum = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    int sc[8], m[8];
    unpack_scales_k4(w[b].scales, sc, m);
    int32_t sumi = 0;
    int32_t summ = 0;
    for (int c = 0; c < 4; ++c) {
      int32_t s0 = 0, s1 = 0;
      for (int l = 0; l < 32; ++l) {
        int q0 = w[b].qs[32 * c + l] & 0x0F;
        int q1 = w[b].qs[32 * c + l] >> 4;
        if constexpr (sizeof(Block) == sizeof(BlockQ5_K)) {
          q0 |= ((w[b].qh[l] >> (2 * c)) & 1) << 4;
          q1 |= ((w[b].qh[l] >> (2 * c + 1)) & 1) << 4;
        }
        s0 += q0 * x[b].qs[64 * c + l];
        s1 += q1 * x[b].qs[64 * c + 32 + l];
      }
      sumi += sc[2 * c] * s0 + sc[2 * c + 1] * s1;
    }
    for (int s = 0; s < 8; ++s) summ += m[s] * (x[b].bsums[2 * s] + x[b].bsums[2 * s + 1]);
    sum += fp16_to_f32(w[b].d) * x[b].d * static_cast<float>(sumi) -
           fp16_to_f32(w[b].dmin) * x[b].d * static_cast<float>(summ);
  }
  return sum;
}

float dot_q6_k(const BlockQ6_K* w, const BlockQ8_K* x, int64_t nb) {
  float sum = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t sumi = 0;
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = w[b].ql + 64 * h;
      const uint8_t* qh = w[b].qh + 32 * h;
      for (int k = 0; k < 4; ++k) {
        for (int half = 0; half < 2; ++half) {  // 16 elements per scale
          const int e0 = 128 * h + 32 * k + 16 * half;
          int32_t s = 0;
          for (int l = 16 * half; l < 16 * half + 16; ++l) {
            const uint8_t lo = ql[l + 32 * (k & 1)];
            const int q = ((k < 2 ? lo & 0x0F : lo >> 4) | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
            s += q * x[b].qs[128 * h + 32 * k + l];
          }
          sumi += w[b].scales[e0 / 16] * s;
        }
      }
    }
    sum += fp16_to_f32(w[b].d) * x[b].d * static_cast<float>(sumi);
  }
  return sum;
}

// Rows outer, tokens inner: a weight row is read from memory once and then
// reused from cache for every token.
template <class W, class X, float (*kDot)(const W*, const X*, int64_t), int64_t kPerElem>
void rows_kernel(const MatmulArgs& a, int64_t r0, int64_t r1) {
  const int64_t n = a.n_cols / kPerElem;
  for (int64_t r = r0; r < r1; ++r) {
    const auto* w = reinterpret_cast<const W*>(a.w + r * a.w_stride);
    for (int64_t t = 0; t < a.n_tokens; ++t) {
      const auto* x = reinterpret_cast<const X*>(a.x + t * a.x_stride);
      a.y[t * a.ldy + r] = kDot(w, x, n);
    }
  }
}

// Q4_1: d * dx * sum(q * x) + m * dx * sum(x), sum(x) from the BlockSums.
void rows_kernel_q4_1(const MatmulArgs& a, int64_t r0, int64_t r1) {
  const int64_t nb = a.n_cols / 32;
  for (int64_t r = r0; r < r1; ++r) {
    const auto* w = reinterpret_cast<const BlockQ4_1*>(a.w + r * a.w_stride);
    for (int64_t t = 0; t < a.n_tokens; ++t) {
      const uint8_t* row = a.x + t * a.x_stride;
      const auto* x = reinterpret_cast<const BlockQ8_0*>(row);
      const auto* xs = reinterpret_cast<const BlockSum*>(row + a.x_sums_offset);
      float sum = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        int32_t sumi = 0;
        for (int j = 0; j < 16; ++j) {
          sumi += (w[b].qs[j] & 0x0F) * x[b].qs[j] + (w[b].qs[j] >> 4) * x[b].qs[16 + j];
        }
        sum += static_cast<float>(sumi) * (fp16_to_f32(w[b].d) * xs[b].d) +
               fp16_to_f32(w[b].m) * xs[b].d * static_cast<float>(xs[b].bias);
      }
      a.y[t * a.ldy + r] = sum;
    }
  }
}

// Packed Q8_0/Q4_0/Q4_1/Q5_0 (format in matmul_kernels.h), one group of 16
// rows at a time. The same arithmetic and summation order as dot_q8_0,
// dot_q4_0, rows_kernel_q4_1 and dot_q5_0.
inline int32_t packed_dot(const BlockQ8_0*, const uint8_t* q, int i, const int8_t* xq) {
  int32_t sum = 0;
  for (int k = 0; k < kPackedSlabsQ8_0; ++k) {
    for (int j = 0; j < 4; ++j) sum += static_cast<int8_t>(q[k * 64 + i * 4 + j]) * xq[4 * k + j];
  }
  return sum;
}
// Packed Q4_0/Q4_1: the nibbles of row i, less kOffset, times x.
template <int kOffset>
inline int32_t nibble_dot(const uint8_t* q, int i, const int8_t* xq) {
  int32_t sum = 0;
  for (int k = 0; k < kPackedSlabsQ4_0; ++k) {
    for (int j = 0; j < 4; ++j) {
      const uint8_t v = q[k * 64 + i * 4 + j];
      sum += ((v & 0x0F) - kOffset) * xq[4 * k + j] + ((v >> 4) - kOffset) * xq[16 + 4 * k + j];
    }
  }
  return sum;
}
inline int32_t packed_dot(const BlockQ4_0*, const uint8_t* q, int i, const int8_t* xq) {
  return nibble_dot<8>(q, i, xq);
}
inline int32_t packed_dot(const BlockQ4_1*, const uint8_t* q, int i, const int8_t* xq) {
  return nibble_dot<0>(q, i, xq);
}
// The high 5-bit quant of byte p of slab k in a packed Q5_0 block column or
// Q5_K sub-block at q (format in matmul_kernels.h).
inline int q5_high(const uint8_t* q, int k, int p) {
  return (q[64 * k + p] >> 5) | (((q[256 + p] >> (2 * k)) & 3) << 3);
}
inline int32_t packed_dot(const BlockQ5_0*, const uint8_t* q, int i, const int8_t* xq) {
  int32_t sum = 0;
  for (int k = 0; k < 4; ++k) {
    for (int j = 0; j < 4; ++j) {
      const int lo = q[k * 64 + i * 4 + j] & 0x1F, hi = q5_high(q, k, 4 * i + j);
      sum += (lo - 16) * xq[4 * k + j] + (hi - 16) * xq[16 + 4 * k + j];
    }
  }
  return sum;
}

template <class WBlock>
void packed_rows_kernel(const MatmulArgs& a, int64_t r0, int64_t r1) {
  constexpr bool kMinima = std::is_same_v<WBlock, BlockQ4_1>;
  // Q5_0 adds its top bits to the block column's slabs.
  const size_t block_bytes =
      std::is_same_v<WBlock, BlockQ5_0> ? kPackedQ5_0Bytes : kPackRows * sizeof(WBlock::qs);
  const int64_t nb = a.n_cols / kQK8_0;
  for (int64_t r = r0; r < r1; r += kPackRows) {
    const uint8_t* group = a.w + (r / kPackRows) * a.w_stride;
    const auto* scales = reinterpret_cast<const uint16_t*>(group);
    const uint16_t* minima = scales + nb * kPackRows;
    const uint8_t* quants = group + nb * kPackRows * sizeof(uint16_t) * (kMinima ? 2 : 1);
    const int n_valid = static_cast<int>(std::min<int64_t>(kPackRows, r1 - r));
    for (int64_t t = 0; t < a.n_tokens; ++t) {
      const uint8_t* row = a.x + t * a.x_stride;
      const auto* x = reinterpret_cast<const BlockQ8_0*>(row);
      const auto* xs = reinterpret_cast<const BlockSum*>(row + a.x_sums_offset);
      for (int i = 0; i < n_valid; ++i) {
        float sum = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
          const int32_t sumi =
              packed_dot(static_cast<const WBlock*>(nullptr), quants + b * block_bytes, i, x[b].qs);
          const float dx = fp16_to_f32(x[b].d);
          sum += static_cast<float>(sumi) * (fp16_to_f32(scales[b * kPackRows + i]) * dx);
          if constexpr (kMinima) {
            sum += fp16_to_f32(minima[b * kPackRows + i]) * dx * static_cast<float>(xs[b].bias);
          }
        }
        a.y[t * a.ldy + r + i] = sum;
      }
    }
  }
}

// Packed Q4_K and Q5_K (formats in matmul_kernels.h): the arithmetic of
// dot_q45_k on the packed bytes, one row at a time.
template <bool kFive>
void packed_rows_kernel_q45_k(const MatmulArgs& a, int64_t r0, int64_t r1) {
  constexpr size_t kBytes = kFive ? kPackedQ5KBytes : kPackedQ4KBytes;
  const int64_t nb = a.n_cols / kQK_K;
  for (int64_t r = r0; r < r1; r += kPackRows) {
    const uint8_t* group = a.w + (r / kPackRows) * a.w_stride;
    const int n_valid = static_cast<int>(std::min<int64_t>(kPackRows, r1 - r));
    for (int64_t t = 0; t < a.n_tokens; ++t) {
      const auto* x = reinterpret_cast<const BlockQ8_K*>(a.x + t * a.x_stride);
      for (int row = 0; row < n_valid; ++row) {
        const int h = row / 8, i = row % 8;
        float sum = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
          const uint8_t* o = group + b * kBytes;
          uint16_t d, dmin;
          std::memcpy(&d, o + 2 * row, 2);
          std::memcpy(&dmin, o + 32 + 2 * row, 2);
          int32_t sumi = 0, summ = 0;
          for (int sb = 0; sb < 8; ++sb) {
            const uint8_t scb = o[64 + 64 * h + 8 * sb + i];
            const uint8_t mh = o[192 + 32 * h + 8 * (sb % 4) + i];
            const int sc = scb & 63;
            const int m = (scb >> 6) | (((sb < 4 ? mh : mh >> 4) & 0x0F) << 2);
            const uint8_t* q = o + packed_k_subblock(kFive, sb);
            int32_t sq = 0;
            for (int k = 0; k < 4; ++k) {
              for (int j = 0; j < 4; ++j) {
                const uint8_t v = q[64 * k + 4 * row + j];
                int lo = v & 0x0F, hi = v >> 4;
                if constexpr (kFive) {
                  lo = v & 0x1F;
                  hi = q5_high(q, k, 4 * row + j);
                }
                sq += lo * x[b].qs[32 * sb + 4 * k + j] + hi * x[b].qs[32 * sb + 16 + 4 * k + j];
              }
            }
            sumi += sc * sq;
            summ += m * (x[b].bsums[2 * sb] + x[b].bsums[2 * sb + 1]);
          }
          sum += fp16_to_f32(d) * x[b].d * static_cast<float>(sumi) -
                 fp16_to_f32(dmin) * x[b].d * static_cast<float>(summ);
        }
        a.y[t * a.ldy + r + row] = sum;
      }
    }
  }
}

// Packed Q6_K (format in matmul_kernels.h): dot_q6_k's arithmetic on the
// packed bytes.
void packed_rows_kernel_q6_k(const MatmulArgs& a, int64_t r0, int64_t r1) {
  const int64_t nb = a.n_cols / kQK_K;
  for (int64_t r = r0; r < r1; r += kPackRows) {
    const uint8_t* group = a.w + (r / kPackRows) * a.w_stride;
    const int n_valid = static_cast<int>(std::min<int64_t>(kPackRows, r1 - r));
    for (int64_t t = 0; t < a.n_tokens; ++t) {
      const auto* x = reinterpret_cast<const BlockQ8_K*>(a.x + t * a.x_stride);
      for (int row = 0; row < n_valid; ++row) {
        const int h = row / 8, i = row % 8;
        float sum = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
          const uint8_t* o = group + b * kPackedQ6KBytes;
          uint16_t d;
          std::memcpy(&d, o + 2 * row, 2);
          int32_t sumi = 0;
          for (int sb = 0; sb < 16; ++sb) {
            const int sc = static_cast<int8_t>(o[32 + 128 * h + 8 * sb + i]);
            const uint8_t* sub = o + 288 + 192 * sb;
            int32_t s = 0;
            for (int e = 0; e < 16; ++e) {
              const int c = e / 4, j = e % 4;
              int q = 0;
              if (c == 2) {
                for (int k = 0; k < 3; ++k) q |= (sub[64 * k + 4 * row + j] >> 6) << (2 * k);
              } else {
                q = sub[64 * (c == 3 ? 2 : c) + 4 * row + j] & 0x3F;
              }
              s += (q - 32) * x[b].qs[16 * sb + e];
            }
            sumi += sc * s;
          }
          sum += fp16_to_f32(d) * x[b].d * static_cast<float>(sumi);
        }
        a.y[t * a.ldy + r + row] = sum;
      }
    }
  }
}

}  // namespace

void convert_row_f16_rounded(const float* x, void* dst, int64_t n) {
  auto* d = static_cast<float*>(dst);
  for (int64_t i = 0; i < n; ++i) d[i] = fp16_to_f32(f32_to_fp16(x[i]));
}

void convert_row_bf16(const float* x, void* dst, int64_t n) {
  auto* d = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(x[i]);
}

void convert_row_q8_0(const float* x, void* dst, int64_t n) {
  quantize_row_q8_0_act(x, static_cast<BlockQ8_0*>(dst), n);
}

void convert_row_q8_k(const float* x, void* dst, int64_t n) {
  quantize_row_q8_k(x, static_cast<BlockQ8_K*>(dst), n);
}

const KernelTable& portable_kernels() {
  static const KernelTable table = [] {
    KernelTable t;
    t.f32.rows = rows_kernel<float, float, dot_f32, 1>;
    t.f16.rows = rows_kernel<uint16_t, float, dot_f16, 1>;
    t.bf16.rows = rows_kernel<uint16_t, uint16_t, dot_bf16, 1>;
    t.q8_0.rows = rows_kernel<BlockQ8_0, BlockQ8_0, dot_q8_0, kQK8_0>;
    t.q4_0.rows = rows_kernel<BlockQ4_0, BlockQ8_0, dot_q4_0, kQK4_0>;
    t.q4_1.rows = rows_kernel_q4_1;
    t.q5_0.rows = rows_kernel<BlockQ5_0, BlockQ8_0, dot_q5_0, 32>;
    t.q4_k.rows = rows_kernel<BlockQ4_K, BlockQ8_K, dot_q45_k<BlockQ4_K>, kQK_K>;
    t.q5_k.rows = rows_kernel<BlockQ5_K, BlockQ8_K, dot_q45_k<BlockQ5_K>, kQK_K>;
    t.q6_k.rows = rows_kernel<BlockQ6_K, BlockQ8_K, dot_q6_k, kQK_K>;
    t.q8_0.packed_rows = packed_rows_kernel<BlockQ8_0>;
    t.q4_k.packed_rows = packed_rows_kernel_q45_k<false>;
    t.q5_k.packed_rows = packed_rows_kernel_q45_k<true>;
    t.q6_k.packed_rows = packed_rows_kernel_q6_k;
    t.q4_0.packed_rows = packed_rows_kernel<BlockQ4_0>;
    t.q4_1.packed_rows = packed_rows_kernel<BlockQ4_1>;
    t.q5_0.packed_rows = packed_rows_kernel<BlockQ5_0>;
    return t;
  }();
  return table;
}

}  // namespace tandem::kernels::internal
