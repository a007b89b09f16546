#include "runtime/kernels/cpu/convert.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
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
  EXPECT_EQ(quantize_row(DType::kQ4_K, x.data(), buf.data(), 64).code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(quantize_row(DType::kQ8_0, x.data(), buf.data(), 48).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(quantize_row(DType::kF16, x.data(), buf.data(), 7).ok());
}

TEST(Quantize, SupportedTypes) {
  int n = 0;
  for (uint32_t t = 0; t < 64; ++t) n += kernels_support(static_cast<DType>(t)) ? 1 : 0;
  EXPECT_EQ(n, 5);
  EXPECT_TRUE(kernels_support(DType::kBF16));
  EXPECT_FALSE(kernels_support(DType::kQ4_1));
}

// Every Isa's activation conversion must agree with the portable one bit for
// bit: the reference and llama.cpp both assume these exact values.
TEST(Quantize, SimdActivationConversionsMatchPortable) {
  const int64_t n = 32 * 37;
  std::vector<float> x = random_floats(n, 9, 4.0f);
  std::fill(x.begin(), x.begin() + 32, 0.0f);
  x[32] = -127.0f;  // makes the scale 1, so the halves below are exact ties
  for (int j = 33; j < 64; ++j) x[j] = (j - 48) * 0.5f;
  for (DType type : {DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0}) {
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

}  // namespace
}  // namespace tandem::kernels
