// The transport's own f16/bf16 conversions and reduce_sum, against plain
// references (exhaustive over the 65536 half values).
#include "transport/collectives/reduce.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace tandem::transport {
namespace {

// memcpy, but defined for empty vectors (whose data() may be null).
void copy_bytes(void* dst, const void* src, size_t n) {
  if (n > 0) std::memcpy(dst, src, n);
}

// Reference f16 decoding from the definition.
double f16_reference(uint16_t h) {
  const int sign = (h & 0x8000) ? -1 : 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  if (exp == 0x1f) return mant ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
  if (exp == 0) return sign * std::ldexp(mant, -24);
  return sign * std::ldexp(1024 + mant, exp - 25);
}

TEST(HalfTest, F16DecodesEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const double want = f16_reference(static_cast<uint16_t>(h));
    const float got = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << h;
    } else {
      EXPECT_EQ(static_cast<double>(got), want) << h;
    }
  }
}

TEST(HalfTest, F16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    EXPECT_EQ(f32_to_f16(f), h) << h;
  }
}

// Nearest-even rounding, checked at the midpoints between neighbouring halves
// (exact in f32) and just off them.
TEST(HalfTest, F16RoundsToNearestEven) {
  for (uint32_t h = 0; h < 0x7bff; ++h) {
    const float lo = f16_to_f32(static_cast<uint16_t>(h));
    const float hi = f16_to_f32(static_cast<uint16_t>(h + 1));
    const float mid = static_cast<float>((static_cast<double>(lo) + hi) / 2);
    const uint16_t even = (h % 2 == 0) ? h : h + 1;
    EXPECT_EQ(f32_to_f16(mid), even) << h;
    EXPECT_EQ(f32_to_f16(-mid), even | 0x8000) << h;
    EXPECT_EQ(f32_to_f16(std::nextafter(mid, 0.0f)), h) << h;
    EXPECT_EQ(f32_to_f16(std::nextafter(mid, INFINITY)), h + 1) << h;
  }
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds to infinity
  EXPECT_EQ(f32_to_f16(1e10f), 0x7c00);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0);  // tie with zero: even
  EXPECT_EQ(f32_to_f16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 1);
}

TEST(HalfTest, Bf16RoundsToNearestEven) {
  for (uint32_t h = 0; h < 0x7f7f; h += 7) {
    const float lo = bf16_to_f32(static_cast<uint16_t>(h));
    EXPECT_EQ(f32_to_bf16(lo), h);
    const float mid = std::bit_cast<float>((h << 16) | 0x8000u);
    EXPECT_EQ(f32_to_bf16(mid), (h % 2 == 0) ? h : h + 1) << h;
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>((h << 16) | 0x8001u)), h + 1) << h;
  }
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(ReduceSumTest, AddsInF32AndRoundsOnce) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-4.0f, 4.0f);
  const size_t n = 1001;
  std::vector<uint16_t> a(n), b(n), c(n), d(n);
  std::vector<float> fa(n), fb(n);
  std::vector<int32_t> ia(n), ib(n);
  for (size_t i = 0; i < n; ++i) {
    a[i] = f32_to_f16(dist(rng));
    b[i] = f32_to_f16(dist(rng));
    c[i] = f32_to_bf16(dist(rng));
    d[i] = f32_to_bf16(dist(rng));
    fa[i] = dist(rng);
    fb[i] = dist(rng);
    ia[i] = static_cast<int32_t>(rng());
    ib[i] = static_cast<int32_t>(rng());
  }
  auto a0 = a, c0 = c;
  auto fa0 = fa;
  auto ia0 = ia;
  reduce_sum(a.data(), b.data(), n, DataType::kF16);
  reduce_sum(c.data(), d.data(), n, DataType::kBF16);
  reduce_sum(fa.data(), fb.data(), n, DataType::kF32);
  reduce_sum(ia.data(), ib.data(), n, DataType::kI32);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(a[i], f32_to_f16(f16_to_f32(a0[i]) + f16_to_f32(b[i])));
    EXPECT_EQ(c[i], f32_to_bf16(bf16_to_f32(c0[i]) + bf16_to_f32(d[i])));
    EXPECT_EQ(fa[i], fa0[i] + fb[i]);
    EXPECT_EQ(static_cast<uint32_t>(ia[i]),
              static_cast<uint32_t>(ia0[i]) + static_cast<uint32_t>(ib[i]));
  }
  EXPECT_FALSE(reducible(DataType::kU8));
}


// reduce_sum's vectorized conversions against the scalar ones, for every
// 16-bit value as one operand and awkward values (zeros, subnormals, the
// largest finite, infinities, NaNs) and random ones as the other, in a buffer
// that starts one byte off alignment.
void expect_sums_match_scalar(DataType type, float (*to_f32)(uint16_t),
                              uint16_t (*from_f32)(float)) {
  std::vector<uint16_t> others = {0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x0400, 0x3c00,
                                  0xbc00, 0x7bff, 0xfbff, 0x7c00, 0xfc00, 0x7e00, 0x7d01,
                                  0x7f7f, 0xff7f, 0x7f80, 0x0080, 0x007f, 0x3f80};
  std::mt19937 rng(11);
  for (int i = 0; i < 12; ++i) others.push_back(static_cast<uint16_t>(rng()));
  const size_t n = 65536;
  std::vector<std::byte> a_buf(2 * n + 1), b_buf(2 * n + 1);
  std::vector<uint16_t> a(n), b(n), got(n);
  for (uint16_t other : others) {
    for (size_t i = 0; i < n; ++i) {
      a[i] = static_cast<uint16_t>(i);
      b[i] = other;
    }
    copy_bytes(a_buf.data() + 1, a.data(), 2 * n);
    copy_bytes(b_buf.data() + 1, b.data(), 2 * n);
    reduce_sum(a_buf.data() + 1, b_buf.data() + 1, n, type);
    copy_bytes(got.data(), a_buf.data() + 1, 2 * n);
    int failures = 0;
    for (size_t i = 0; i < n && failures < 10; ++i) {
      const uint16_t want = from_f32(to_f32(a[i]) + to_f32(b[i]));
      // Which NaN's payload survives a NaN + NaN is the FPU's choice.
      if (std::isnan(to_f32(want)) && std::isnan(to_f32(got[i]))) continue;
      if (got[i] != want) {
        ++failures;
        ADD_FAILURE() << dtype_name(type) << " " << std::hex << a[i] << " + " << b[i] << ": got "
                      << got[i] << ", want " << want;
      }
    }
  }
}

TEST(ReduceSumTest, F16MatchesScalarConversionsOnEveryValue) {
  expect_sums_match_scalar(DataType::kF16, f16_to_f32, f32_to_f16);
}

TEST(ReduceSumTest, Bf16MatchesScalarConversionsOnEveryValue) {
  expect_sums_match_scalar(DataType::kBF16, bf16_to_f32, f32_to_bf16);
}

TEST(ReduceSumTest, F32AndI32AtEveryLengthAndOffset) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> dist(-100.0f, 100.0f);
  for (size_t offset : {0, 1, 2, 3}) {
    for (size_t n = 0; n <= 67; ++n) {
      std::vector<float> x(n), y(n);
      std::vector<uint32_t> u(n), v(n);
      for (size_t i = 0; i < n; ++i) {
        x[i] = dist(rng), y[i] = dist(rng);
        u[i] = static_cast<uint32_t>(rng()), v[i] = static_cast<uint32_t>(rng());
      }
      std::vector<std::byte> a(4 * n + offset + 4), b(4 * n + offset + 4);
      copy_bytes(a.data() + offset, x.data(), 4 * n);
      copy_bytes(b.data() + offset, y.data(), 4 * n);
      reduce_sum(a.data() + offset, b.data() + offset, n, DataType::kF32);
      std::vector<float> sum(n);
      copy_bytes(sum.data(), a.data() + offset, 4 * n);
      for (size_t i = 0; i < n; ++i) EXPECT_EQ(sum[i], x[i] + y[i]) << n << " " << i;
      copy_bytes(a.data() + offset, u.data(), 4 * n);
      copy_bytes(b.data() + offset, v.data(), 4 * n);
      reduce_sum(a.data() + offset, b.data() + offset, n, DataType::kI32);
      std::vector<uint32_t> isum(n);
      copy_bytes(isum.data(), a.data() + offset, 4 * n);
      for (size_t i = 0; i < n; ++i) EXPECT_EQ(isum[i], u[i] + v[i]) << n << " " << i;
    }
  }
}

}  // namespace
}  // namespace tandem::transport
