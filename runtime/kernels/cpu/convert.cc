#include "runtime/kernels/cpu/convert.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tandem::kernels {
namespace {

inline float from_bits(uint32_t w) { return std::bit_cast<float>(w); }
inline uint32_t to_bits(float f) { return std::bit_cast<uint32_t>(f); }

}  // namespace

// The two fp16 conversions are ggml's portable ones (from Maratyszcza's FP16
// library): exact, round to nearest even, and free of table look-ups.
float fp16_to_f32(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const uint32_t exp_offset = 0xE0u << 23;
  const float exp_scale = 0x1.0p-112f;
  const float normalized = from_bits((two_w >> 4) + exp_offset) * exp_scale;
  const uint32_t magic_mask = 126u << 23;
  const float magic_bias = 0.5f;
  const float denormalized = from_bits((two_w >> 17) | magic_mask) - magic_bias;
  const uint32_t denormalized_cutoff = 1u << 27;
  return from_bits(sign |
                   (two_w < denormalized_cutoff ? to_bits(denormalized) : to_bits(normalized)));
}

uint16_t f32_to_fp16(float f) {
  const float scale_to_inf = 0x1.0p+112f;
  const float scale_to_zero = 0x1.0p-110f;
  float base = (std::fabs(f) * scale_to_inf) * scale_to_zero;
  const uint32_t w = to_bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = from_bits((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = to_bits(base);
  const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
  const uint32_t mantissa_bits = bits & 0x00000FFFu;
  const uint32_t nonsign = exp_bits + mantissa_bits;
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

float bf16_to_f32(uint16_t h) { return from_bits(static_cast<uint32_t>(h) << 16); }

uint16_t f32_to_bf16(float f) {
  const uint32_t u = to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 64);  // quiet NaN
  return static_cast<uint16_t>((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

void quantize_row_q8_0_ref(const float* x, BlockQ8_0* y, int64_t n) {
  TANDEM_CHECK(n % kQK8_0 == 0);
  for (int64_t i = 0; i < n / kQK8_0; ++i) {
    const float* xb = x + i * kQK8_0;
    float amax = 0.0f;
    for (int j = 0; j < kQK8_0; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / ((1 << 7) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_fp16(d);
    for (int j = 0; j < kQK8_0; ++j) y[i].qs[j] = static_cast<int8_t>(std::roundf(xb[j] * id));
  }
}

void quantize_row_q4_0_ref(const float* x, BlockQ4_0* y, int64_t n) {
  TANDEM_CHECK(n % kQK4_0 == 0);
  constexpr int kHalf = kQK4_0 / 2;
  for (int64_t i = 0; i < n / kQK4_0; ++i) {
    const float* xb = x + i * kQK4_0;
    float amax = 0.0f;  // largest |x|
    float max = 0.0f;   // the x that has it, with its sign
    for (int j = 0; j < kQK4_0; ++j) {
      if (amax < std::fabs(xb[j])) {
        amax = std::fabs(xb[j]);
        max = xb[j];
      }
    }
    const float d = max / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_fp16(d);
    for (int j = 0; j < kHalf; ++j) {
      const float x0 = xb[j] * id;
      const float x1 = xb[kHalf + j] * id;
      const uint8_t q0 = std::min<int8_t>(15, static_cast<int8_t>(x0 + 8.5f));
      const uint8_t q1 = std::min<int8_t>(15, static_cast<int8_t>(x1 + 8.5f));
      y[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void quantize_row_q8_0_act(const float* x, BlockQ8_0* y, int64_t n) {
  TANDEM_CHECK(n % kQK8_0 == 0);
  for (int64_t i = 0; i < n / kQK8_0; ++i) {
    const float* xb = x + i * kQK8_0;
    float amax = 0.0f;
    for (int j = 0; j < kQK8_0; ++j) amax = std::max(amax, std::fabs(xb[j]));
    y[i].d = f32_to_fp16(amax / 127.f);
    const float id = amax != 0.0f ? 127.f / amax : 0.0f;
    // nearbyint rounds half to even in the default rounding mode, as
    // _mm256_round_ps(_MM_ROUND_NEAREST) does in ggml.
    for (int j = 0; j < kQK8_0; ++j) y[i].qs[j] = static_cast<int8_t>(std::nearbyint(xb[j] * id));
  }
}

bool kernels_support(DType type) {
  switch (type) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ5_0:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return true;
    default:
      return false;
  }
}

absl::Status quantize_row(DType type, const float* x, void* dst, int64_t n) {
  if (!kernels_support(type)) {
    return absl::UnimplementedError(
        absl::StrCat("cannot quantize to ", dtype_name(type), ": unsupported type"));
  }
  const int64_t block = dtype_info(type)->block_size;
  if (n < 0 || n % block != 0) {
    return absl::InvalidArgumentError(absl::StrCat("row of ", n, " elements is not a multiple of ",
                                                   block, " for ", dtype_name(type)));
  }
  switch (type) {
    case DType::kF32:
      std::memcpy(dst, x, n * sizeof(float));
      break;
    case DType::kF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_fp16(x[i]);
      break;
    }
    case DType::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(x[i]);
      break;
    }
    case DType::kQ8_0:
      quantize_row_q8_0_ref(x, static_cast<BlockQ8_0*>(dst), n);
      break;
    case DType::kQ4_0:
      quantize_row_q4_0_ref(x, static_cast<BlockQ4_0*>(dst), n);
      break;
    case DType::kQ4_1:
      quantize_row_q4_1_ref(x, static_cast<BlockQ4_1*>(dst), n);
      break;
    case DType::kQ5_0:
      quantize_row_q5_0_ref(x, static_cast<BlockQ5_0*>(dst), n);
      break;
    case DType::kQ4_K:
      quantize_row_q4_k_ref(x, static_cast<BlockQ4_K*>(dst), n);
      break;
    case DType::kQ5_K:
      quantize_row_q5_k_ref(x, static_cast<BlockQ5_K*>(dst), n);
      break;
    case DType::kQ6_K:
      quantize_row_q6_k_ref(x, static_cast<BlockQ6_K*>(dst), n);
      break;
    default:
      break;
  }
  return absl::OkStatus();
}

void dequantize_row(DType type, const void* src, float* dst, int64_t n) {
  switch (type) {
    case DType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_f32(s[i]);
      return;
    }
    case DType::kBF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DType::kQ8_0: {
      TANDEM_CHECK(n % kQK8_0 == 0);
      const auto* b = static_cast<const BlockQ8_0*>(src);
      for (int64_t i = 0; i < n / kQK8_0; ++i) {
        const float d = fp16_to_f32(b[i].d);
        for (int j = 0; j < kQK8_0; ++j) dst[i * kQK8_0 + j] = b[i].qs[j] * d;
      }
      return;
    }
    case DType::kQ4_0: {
      TANDEM_CHECK(n % kQK4_0 == 0);
      const auto* b = static_cast<const BlockQ4_0*>(src);
      constexpr int kHalf = kQK4_0 / 2;
      for (int64_t i = 0; i < n / kQK4_0; ++i) {
        const float d = fp16_to_f32(b[i].d);
        for (int j = 0; j < kHalf; ++j) {
          dst[i * kQK4_0 + j] = ((b[i].qs[j] & 0x0F) - 8) * d;
          dst[i * kQK4_0 + kHalf + j] = ((b[i].qs[j] >> 4) - 8) * d;
        }
      }
      return;
    }
    default:
      break;
  }
  const auto info = dtype_info(type);
  TANDEM_CHECK(info.has_value() && n % info->block_size == 0);
  switch (type) {
    case DType::kQ4_1:
      return dequantize_row_q4_1(static_cast<const BlockQ4_1*>(src), dst, n);
    case DType::kQ5_0:
      return dequantize_row_q5_0(static_cast<const BlockQ5_0*>(src), dst, n);
    case DType::kQ4_K:
      return dequantize_row_q4_k(static_cast<const BlockQ4_K*>(src), dst, n);
    case DType::kQ5_K:
      return dequantize_row_q5_k(static_cast<const BlockQ5_K*>(src), dst, n);
    case DType::kQ6_K:
      return dequantize_row_q6_k(static_cast<const BlockQ6_K*>(src), dst, n);
    case DType::kQ8_K:
      return dequantize_row_q8_k(static_cast<const BlockQ8_K*>(src), dst, n);
    default:
      TANDEM_CHECK(kernels_support(type));
  }
}

}  // namespace tandem::kernels
