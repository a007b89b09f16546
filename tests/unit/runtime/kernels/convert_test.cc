#include "runtime/kernels/cpu/convert.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <random>
#include <vector>

#include "runtime/kernels/cpu/matmul.h"
#include "runtime/kernels/cpu/matmul_kernels.h"

namespace tandem::kernels {
namespace {

bool is_fp16_nan(uint16_t h) { return (h & 0x7C00) == 0x7C00 && (h & 0x03FF) != 0; }

TEST(Fp16, EveryValueRoundTrips) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const auto h = static_cast<uint16_t>(i);
    const float f = fp16_to_f32(h);
    if (is_fp16_nan(h)) {
      EXPECT_TRUE(std::isnan(f)) << i;
      EXPECT_TRUE(is_fp16_nan(f32_to_fp16(f))) << i;
      continue;
    }
    EXPECT_EQ(f32_to_fp16(f), h) << i;
  }
}

TEST(Fp16, KnownValues) {
  EXPECT_EQ(fp16_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(fp16_to_f32(0xC000), -2.0f);
  EXPECT_EQ(fp16_to_f32(0x7BFF), 65504.0f);
  EXPECT_EQ(fp16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f32_to_fp16(1e6f), 0x7C00);                   // overflow to infinity
  EXPECT_EQ(f32_to_fp16(-1e6f), 0xFC00);
  EXPECT_EQ(f32_to_fp16(std::ldexp(1.0f, -26)), 0x0000);  // below half the smallest: zero
  EXPECT_EQ(f32_to_fp16(-0.0f), 0x8000);
}

// Halfway between two neighbours, the even one wins.
TEST(Fp16, TiesRoundToEven) {
  for (uint32_t i = 0; i < 0x7BFF; ++i) {
    const auto h = static_cast<uint16_t>(i);
    const double mid = (static_cast<double>(fp16_to_f32(h)) + fp16_to_f32(h + 1)) / 2;
    const auto f = static_cast<float>(mid);
    ASSERT_EQ(static_cast<double>(f), mid);  // exact in f32
    const uint16_t even = (h & 1) ? h + 1 : h;
    EXPECT_EQ(f32_to_fp16(f), even) << i;
    EXPECT_EQ(f32_to_fp16(-f), even | 0x8000) << i;
    // Just above or below the tie rounds to the nearer one.
    EXPECT_EQ(f32_to_fp16(std::nextafter(f, 1e9f)), h + 1) << i;
    EXPECT_EQ(f32_to_fp16(std::nextafter(f, -1e9f)), h) << i;
  }
}

#if defined(__aarch64__)
#define TANDEM_HAVE_HALF 1
using Half = __fp16;  // hardware conversions
#elif defined(__x86_64__) && defined(__FLT16_MAX__)
#define TANDEM_HAVE_HALF 1
using Half = _Float16;  // libgcc's conversions
#endif

#if defined(TANDEM_HAVE_HALF)
// The compiler's own half-precision conversions as a second opinion.
TEST(Fp16, MatchesCompilerFloat16) {
  std::mt19937 rng(7);
  for (int i = 0; i < 2000000; ++i) {
    const float f = std::bit_cast<float>(static_cast<uint32_t>(rng()));
    if (std::isnan(f)) continue;
    const auto expect = std::bit_cast<uint16_t>(static_cast<Half>(f));
    ASSERT_EQ(f32_to_fp16(f), expect) << f;
  }
  for (uint32_t i = 0; i < 65536; ++i) {
    const auto h = static_cast<uint16_t>(i);
    if (is_fp16_nan(h)) continue;
    ASSERT_EQ(fp16_to_f32(h), static_cast<float>(std::bit_cast<Half>(h))) << i;
  }
}
#endif

TEST(Bf16, EveryValueRoundTripsAndTiesToEven) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const auto h = static_cast<uint16_t>(i);
    const float f = bf16_to_f32(h);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(f))));
      continue;
    }
    EXPECT_EQ(f32_to_bf16(f), h) << i;
    if ((h & 0x7F80) == 0x7F80) continue;  // no tie above the largest finite value
    const uint32_t tie = (i << 16) | 0x8000;
    const uint16_t even = (h & 1) ? h + 1 : h;
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(tie)), even) << i;
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(tie + 1)), static_cast<uint16_t>(h + 1)) << i;
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(tie - 1)), h) << i;
  }
}

TEST(Bf16, NanStaysNanAndQuiet) {
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x7F800001u)), 0x7FC0);  // signalling, tiny payload
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0xFFC00000u)), 0xFFC0);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7F80);
}

std::vector<float> random_floats(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

// Straightforward versions written from llama.cpp's description.
TEST(Quantize, Q8_0RefMatchesScalarDefinition) {
  const int64_t n = 32 * 40;
  std::vector<float> x = random_floats(n, 1, 3.0f);
  std::fill(x.begin() + 64, x.begin() + 96, 0.0f);  // an all-zero block
  std::vector<BlockQ8_0> q(n / 32);
  quantize_row_q8_0_ref(x.data(), q.data(), n);
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    const float d = amax / 127;
    EXPECT_EQ(q[b].d, f32_to_fp16(d));
    for (int j = 0; j < 32; ++j) {
      const int expect = d == 0 ? 0 : static_cast<int>(std::roundf(x[b * 32 + j] * (1.0f / d)));
      EXPECT_EQ(q[b].qs[j], expect) << b << " " << j;
    }
  }
}

TEST(Quantize, Q4_0RefMatchesScalarDefinition) {
  const int64_t n = 32 * 40;
  std::vector<float> x = random_floats(n, 2, 3.0f);
  std::fill(x.begin() + 32, x.begin() + 64, 0.0f);
  x[100] = -5.0f;  // negative extreme: d comes out positive
  std::vector<BlockQ4_0> q(n / 32);
  quantize_row_q4_0_ref(x.data(), q.data(), n);
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x.data() + b * 32;
    int arg = 0;
    for (int j = 1; j < 32; ++j) {
      if (std::fabs(xb[j]) > std::fabs(xb[arg])) arg = j;
    }
    const float d = xb[arg] / -8;
    EXPECT_EQ(q[b].d, f32_to_fp16(d));
    const float id = d == 0 ? 0 : 1.0f / d;
    for (int j = 0; j < 32; ++j) {
      const int expect = std::min(15, static_cast<int>(xb[j] * id + 8.5f));
      const int got = j < 16 ? (q[b].qs[j] & 0xF) : (q[b].qs[j - 16] >> 4);
      EXPECT_EQ(got, expect) << b << " " << j;
    }
  }
}

TEST(Quantize, ActivationQ8_0RoundsHalfToEven) {
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f;  // amax 127: id == 1, so x * id is x
  x[1] = 2.5f;
  x[2] = 3.5f;
  x[3] = -2.5f;
  x[4] = 0.5f;
  BlockQ8_0 act;
  BlockQ8_0 ref;
  quantize_row_q8_0_act(x.data(), &act, 32);
  quantize_row_q8_0_ref(x.data(), &ref, 32);
  EXPECT_EQ(act.qs[0], 127);
  EXPECT_EQ(act.qs[1], 2);
  EXPECT_EQ(act.qs[2], 4);
  EXPECT_EQ(act.qs[3], -2);
  EXPECT_EQ(act.qs[4], 0);
  EXPECT_EQ(ref.qs[1], 3);  // roundf: away from zero
  EXPECT_EQ(ref.qs[3], -3);
  EXPECT_EQ(act.d, f32_to_fp16(1.0f));
}

TEST(Quantize, DequantizeInvertsWithinHalfAStep) {
  const int64_t n = 32 * 64;
  const std::vector<float> x = random_floats(n, 3, 2.0f);
  for (DType type : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0}) {
    std::vector<uint8_t> buf(row_bytes(type, n));
    ASSERT_TRUE(quantize_row(type, x.data(), buf.data(), n).ok());
    std::vector<float> back(n);
    dequantize_row(type, buf.data(), back.data(), n);
    for (int64_t b = 0; b < n / 32; ++b) {
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
      float tol = 0;
      switch (type) {
        case DType::kF32:
          tol = 0;
          break;
        case DType::kF16:
          tol = amax * 0x1p-11f;
          break;
        case DType::kBF16:
          tol = amax * 0x1p-8f;
          break;
        // Half a step, plus the rounding of the scale to fp16.
        case DType::kQ8_0:
          tol = amax / 127 * 0.5f * 1.01f + amax * 0x1p-11f;
          break;
        // q4_0 clamps +8 steps to 7 on the side opposite the extreme: a full step.
        case DType::kQ4_0:
          tol = amax / 8 * 1.01f + amax * 0x1p-10f;
          break;
        default:
          break;
      }
      for (int j = 0; j < 32; ++j) {
        ASSERT_NEAR(back[b * 32 + j], x[b * 32 + j], tol) << dtype_name(type) << " " << b * 32 + j;
      }
    }
  }
}

TEST(Quantize, RejectsBadInput) {
  std::vector<float> x(64, 1.0f);
  std::vector<uint8_t> buf(1024);
  EXPECT_EQ(quantize_row(DType::kQ2_K, x.data(), buf.data(), 256).code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(quantize_row(DType::kQ4_K, x.data(), buf.data(), 64).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(quantize_row(DType::kQ8_0, x.data(), buf.data(), 48).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(quantize_row(DType::kF16, x.data(), buf.data(), 7).ok());
}

TEST(Quantize, SupportedTypes) {
  int n = 0;
  for (uint32_t t = 0; t < 64; ++t) n += kernels_support(static_cast<DType>(t)) ? 1 : 0;
  EXPECT_EQ(n, 10);
  EXPECT_TRUE(kernels_support(DType::kBF16));
  EXPECT_TRUE(kernels_support(DType::kQ4_1));
  EXPECT_TRUE(kernels_support(DType::kQ6_K));
  EXPECT_FALSE(kernels_support(DType::kQ5_1));
  EXPECT_FALSE(kernels_support(DType::kQ8_K));  // activations only
  EXPECT_FALSE(kernels_support(DType::kQ2_K));
}

// Every Isa's activation conversion must agree with the portable one bit for
// bit: the reference and llama.cpp both assume these exact values.
TEST(Quantize, SimdActivationConversionsMatchPortable) {
  const int64_t n = 256 * 5;
  std::vector<float> x = random_floats(n, 9, 4.0f);
  std::fill(x.begin(), x.begin() + 32, 0.0f);
  x[32] = -127.0f;  // makes the scale 1, so the halves below are exact ties
  for (int j = 33; j < 64; ++j) x[j] = (j - 48) * 0.5f;
  for (DType type : {DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0, DType::kQ4_1,
                     DType::kQ5_0, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
    if (n % dtype_info(type)->block_size != 0) continue;
    const size_t bytes = internal::activation_row_bytes(type, n);
    std::vector<uint8_t> expect(bytes);
    internal::activation_converter(Isa::kPortable, type)(x.data(), expect.data(), n);
    for (Isa isa : available_isas()) {
      std::vector<uint8_t> got(bytes);
      internal::activation_converter(isa, type)(x.data(), got.data(), n);
      EXPECT_EQ(std::memcmp(got.data(), expect.data(), bytes), 0)
          << isa_name(isa) << " " << dtype_name(type);
    }
  }
}

// The new types against the bit layouts of the GGUF spec, from blocks built
// by hand: element positions, fifth/sixth bits and the packed 6-bit scales.
TEST(Dequantize, Q5_0Layout) {
  BlockQ5_0 b{};
  b.d = 0x3C00;  // 1.0
  const uint32_t qh = 0x80000001u;  // fifth bits of elements 0 and 31
  std::memcpy(b.qh, &qh, 4);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float y[32];
  dequantize_row(DType::kQ5_0, &b, y, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], (j | (j == 0 ? 16 : 0)) - 16) << j;
    EXPECT_EQ(y[16 + j], ((15 - j) | (j == 15 ? 16 : 0)) - 16) << j;
  }
}

TEST(Dequantize, Q4_1Layout) {
  BlockQ4_1 b{};
  b.d = 0x4000;  // 2.0
  b.m = 0xBC00;  // -1.0
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float y[32];
  dequantize_row(DType::kQ4_1, &b, y, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 2.0f * j - 1.0f);
    EXPECT_EQ(y[16 + j], 2.0f * (15 - j) - 1.0f);
  }
}

TEST(Dequantize, Q4_KAndQ5_KLayout) {
  // Sub-block s gets scale 10 + s + 40 * (s >= 6) and minimum 2 * s + 33 * (s == 7):
  // for s >= 4 the top two bits live in the top bits of bytes s - 4 and s.
  int sc[8], m[8];
  for (int s = 0; s < 8; ++s) {
    sc[s] = 10 + s + (s >= 6 ? 40 : 0);
    m[s] = 2 * s + (s == 7 ? 33 : 0);
  }
  uint8_t scales[12] = {};
  for (int s = 0; s < 4; ++s) {
    scales[s] = static_cast<uint8_t>(sc[s] | ((sc[s + 4] >> 4) << 6));
    scales[s + 4] = static_cast<uint8_t>(m[s] | ((m[s + 4] >> 4) << 6));
    scales[s + 8] = static_cast<uint8_t>((sc[s + 4] & 15) | ((m[s + 4] & 15) << 4));
  }
  BlockQ4_K b4{};
  BlockQ5_K b5{};
  b4.d = b5.d = 0x3C00;     // 1.0
  b4.dmin = b5.dmin = 0x3800;  // 0.5
  std::memcpy(b4.scales, scales, 12);
  std::memcpy(b5.scales, scales, 12);
  for (int i = 0; i < 128; ++i) b4.qs[i] = b5.qs[i] = static_cast<uint8_t>((i % 16) | ((i * 7 % 16) << 4));
  for (int l = 0; l < 32; ++l) b5.qh[l] = static_cast<uint8_t>(l * 37 + 11);
  float y4[256], y5[256];
  dequantize_row(DType::kQ4_K, &b4, y4, 256);
  dequantize_row(DType::kQ5_K, &b5, y5, 256);
  for (int e = 0; e < 256; ++e) {
    const int c = e / 64, l = e % 32, s = e / 32;
    const bool high = (e % 64) >= 32;  // high nibble: the odd sub-block of the chunk
    const int byte = b4.qs[32 * c + l];
    const int q = high ? byte >> 4 : byte & 15;
    const int bit = (b5.qh[l] >> (2 * c + (high ? 1 : 0))) & 1;
    EXPECT_EQ(y4[e], sc[s] * q - 0.5f * m[s]) << e;
    EXPECT_EQ(y5[e], sc[s] * (q + 16 * bit) - 0.5f * m[s]) << e;
  }
}

TEST(Dequantize, Q6_KLayout) {
  BlockQ6_K b{};
  b.d = 0x3800;  // 0.5
  for (int s = 0; s < 16; ++s) b.scales[s] = static_cast<int8_t>(s % 2 ? -(s + 1) : s + 1);
  for (int i = 0; i < 128; ++i) b.ql[i] = static_cast<uint8_t>(i * 13 + 5);
  for (int i = 0; i < 64; ++i) b.qh[i] = static_cast<uint8_t>(i * 29 + 3);
  float y[256];
  dequantize_row(DType::kQ6_K, &b, y, 256);
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, k = (e % 128) / 32, l = e % 32;
    const int lo = b.ql[64 * h + 32 * (k % 2) + l];
    const int q = ((k < 2 ? lo & 15 : lo >> 4) | (((b.qh[32 * h + l] >> (2 * k)) & 3) << 4)) - 32;
    EXPECT_EQ(y[e], 0.5f * b.scales[e / 16] * q) << e;
  }
}

// Quantize then dequantize: RMS error relative to the RMS of the input, for
// N(0, 1)-like data. The bounds are a few times what each type's step gives
// (a uniform error of half a step has RMS step / sqrt(12)).
TEST(Quantize, NewTypesRoundTrip) {
  const int64_t n = 256 * 16;
  const std::vector<float> x = random_floats(n, 17, 1.0f);
  const std::pair<DType, double> bounds[] = {{DType::kQ4_1, 0.12}, {DType::kQ5_0, 0.06},
                                             {DType::kQ4_K, 0.12}, {DType::kQ5_K, 0.06},
                                             {DType::kQ6_K, 0.03}};
  for (auto [type, bound] : bounds) {
    std::vector<uint8_t> buf(row_bytes(type, n));
    ASSERT_TRUE(quantize_row(type, x.data(), buf.data(), n).ok());
    std::vector<float> back(n);
    dequantize_row(type, buf.data(), back.data(), n);
    double err = 0, ref = 0;
    for (int64_t i = 0; i < n; ++i) {
      err += (back[i] - x[i]) * (back[i] - x[i]);
      ref += x[i] * x[i];
    }
    const double rel = std::sqrt(err / ref);
    EXPECT_LT(rel, bound) << dtype_name(type);
    std::printf("%s: relative RMS error %.4f\n", std::string(dtype_name(type)).c_str(), rel);
  }
  // Constant and zero rows stay finite and exact-ish.
  for (DType type : {DType::kQ4_1, DType::kQ5_0, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
    for (float v : {0.0f, 0.25f}) {
      std::vector<float> c(256, v), back(256);
      std::vector<uint8_t> buf(row_bytes(type, 256));
      ASSERT_TRUE(quantize_row(type, c.data(), buf.data(), 256).ok());
      dequantize_row(type, buf.data(), back.data(), 256);
      for (float b : back) ASSERT_NEAR(b, v, 0.02f) << dtype_name(type) << " " << v;
    }
  }
}

TEST(Quantize, Q8_KMatchesDefinition) {
  const int64_t n = 512;
  std::vector<float> x = random_floats(n, 5, 3.0f);
  x[300] = -7.0f;  // the largest magnitude maps to -127 whatever its sign
  std::vector<BlockQ8_K> q(2);
  quantize_row_q8_k(x.data(), q.data(), n);
  for (int b = 0; b < 2; ++b) {
    float amax = 0, max = 0;
    for (int j = 0; j < 256; ++j) {
      if (std::fabs(x[256 * b + j]) > amax) amax = std::fabs(x[256 * b + j]), max = x[256 * b + j];
    }
    EXPECT_FLOAT_EQ(q[b].d, max / -127.0f);
    for (int g = 0; g < 16; ++g) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) {
        const int v = q[b].qs[16 * g + l];
        EXPECT_GE(v, -127);
        EXPECT_NEAR(v * q[b].d, x[256 * b + 16 * g + l], std::fabs(q[b].d) * 0.5001f);
        sum += v;
      }
      EXPECT_EQ(q[b].bsums[g], sum);
    }
  }
  EXPECT_EQ(q[1].qs[300 - 256], -127);
}

}  // namespace
}  // namespace tandem::kernels
