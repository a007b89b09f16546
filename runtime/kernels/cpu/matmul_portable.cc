// Scalar kernels: the fallback on CPUs without a SIMD path, and the baseline
// the SIMD kernels are measured against. Block arithmetic follows ggml's
// scalar vec_dot functions (int32 sum per block, scaled and summed in float).

#include <algorithm>
#include <cmath>
#include <cstring>

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

// Packed Q8_0/Q4_0 (format in matmul_kernels.h), one group of 16 rows at a
// time. The same arithmetic and summation order as dot_q8_0 / dot_q4_0.
inline int32_t packed_dot(const BlockQ8_0*, const uint8_t* q, int i, const int8_t* xq) {
  int32_t sum = 0;
  for (int k = 0; k < kPackedSlabsQ8_0; ++k) {
    for (int j = 0; j < 4; ++j) sum += static_cast<int8_t>(q[k * 64 + i * 4 + j]) * xq[4 * k + j];
  }
  return sum;
}
inline int32_t packed_dot(const BlockQ4_0*, const uint8_t* q, int i, const int8_t* xq) {
  int32_t sum = 0;
  for (int k = 0; k < kPackedSlabsQ4_0; ++k) {
    for (int j = 0; j < 4; ++j) {
      const uint8_t v = q[k * 64 + i * 4 + j];
      sum += ((v & 0x0F) - 8) * xq[4 * k + j] + ((v >> 4) - 8) * xq[16 + 4 * k + j];
    }
  }
  return sum;
}

template <class WBlock>
void packed_rows_kernel(const MatmulArgs& a, int64_t r0, int64_t r1) {
  constexpr size_t kQuantBytes = sizeof(WBlock::qs) * kPackRows;
  const int64_t nb = a.n_cols / kQK8_0;
  for (int64_t r = r0; r < r1; r += kPackRows) {
    const uint8_t* group = a.w + (r / kPackRows) * a.w_stride;
    const auto* scales = reinterpret_cast<const uint16_t*>(group);
    const uint8_t* quants = group + nb * kPackRows * sizeof(uint16_t);
    const int n_valid = static_cast<int>(std::min<int64_t>(kPackRows, r1 - r));
    for (int64_t t = 0; t < a.n_tokens; ++t) {
      const auto* x = reinterpret_cast<const BlockQ8_0*>(a.x + t * a.x_stride);
      for (int i = 0; i < n_valid; ++i) {
        float sum = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
          const int32_t sumi =
              packed_dot(static_cast<const WBlock*>(nullptr), quants + b * kQuantBytes, i, x[b].qs);
          sum += static_cast<float>(sumi) *
                 (fp16_to_f32(scales[b * kPackRows + i]) * fp16_to_f32(x[b].d));
        }
        a.y[t * a.ldy + r + i] = sum;
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

const KernelTable& portable_kernels() {
  static const KernelTable table = [] {
    KernelTable t;
    t.f32.rows = rows_kernel<float, float, dot_f32, 1>;
    t.f16.rows = rows_kernel<uint16_t, float, dot_f16, 1>;
    t.bf16.rows = rows_kernel<uint16_t, uint16_t, dot_bf16, 1>;
    t.q8_0.rows = rows_kernel<BlockQ8_0, BlockQ8_0, dot_q8_0, kQK8_0>;
    t.q4_0.rows = rows_kernel<BlockQ4_0, BlockQ8_0, dot_q4_0, kQK4_0>;
    t.q8_0.packed_rows = packed_rows_kernel<BlockQ8_0>;
    t.q4_0.packed_rows = packed_rows_kernel<BlockQ4_0>;
    return t;
  }();
  return table;
}

}  // namespace tandem::kernels::internal
