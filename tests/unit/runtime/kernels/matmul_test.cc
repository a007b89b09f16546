#include "runtime/kernels/cpu/matmul.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "runtime/kernels/cpu/convert.h"
#include "runtime/kernels/cpu/matmul_reference.h"

namespace tandem::kernels {
namespace {

constexpr DType kTypes[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ8_0,
                            DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ4_K,
                            DType::kQ5_K, DType::kQ6_K};

int64_t block_of(DType type) { return dtype_info(type)->block_size; }

// Row lengths for a type: one block, three, and many (an odd number of
// blocks for every type: 4096 + 256 = 17 super-blocks).
std::vector<int64_t> awkward_cols(DType type) {
  const int64_t b = std::max<int64_t>(32, block_of(type));
  return {b, 3 * b, 4096 + (b > 32 ? b : 0)};
}

std::vector<float> random_floats(int64_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

// Error of a kernel relative to sum |w * x|, the natural scale of rounding
// error in a dot product. Every kernel is exact per product (or per int32
// block sum) and differs from the double reference only in float summation.
double tolerance(DType) { return 3e-5; }

struct Case {
  DType type;
  int64_t n_rows, n_cols, n_tokens;
  bool packed = false;  // run on pack()'s layout (the reference reads the row-major one)
};

class MatmulTest : public ::testing::TestWithParam<DType> {};

void check_case(const Case& c, std::mt19937& rng, ThreadPool& pool) {
  SCOPED_TRACE(testing::Message() << dtype_name(c.type) << " rows=" << c.n_rows
                                  << " cols=" << c.n_cols << " tokens=" << c.n_tokens
                                  << " threads=" << pool.n_threads() << " packed=" << c.packed);
  const std::vector<float> wf = random_floats(c.n_rows * c.n_cols, rng);
  const size_t rb = row_bytes(c.type, c.n_cols);
  std::vector<uint8_t> wq(rb * c.n_rows);
  for (int64_t r = 0; r < c.n_rows; ++r) {
    ASSERT_TRUE(quantize_row(c.type, wf.data() + r * c.n_cols, wq.data() + r * rb, c.n_cols).ok());
  }
  const Matrix w{c.type, wq.data(), c.n_rows, c.n_cols};
  std::vector<uint8_t> packed_data;
  Matrix wk = w;
  if (c.packed) {
    packed_data.resize(packed_bytes(c.type, c.n_rows, c.n_cols));
    wk = pack(w, packed_data.data());
    ASSERT_EQ(wk.layout, Layout::kPacked);
  }
  // Padded strides, with NaN in the padding of x to catch reads past a row.
  const int64_t ldx = c.n_cols + 7;
  const int64_t ldy = c.n_rows + 3;
  std::vector<float> x(ldx * c.n_tokens, std::numeric_limits<float>::quiet_NaN());
  for (int64_t t = 0; t < c.n_tokens; ++t) {
    const std::vector<float> row = random_floats(c.n_cols, rng);
    std::copy(row.begin(), row.end(), x.begin() + t * ldx);
  }
  std::vector<float> ref(ldy * c.n_tokens);
  std::vector<float> abs_ref(ldy * c.n_tokens);
  matmul_reference(w, x.data(), ldx, c.n_tokens, ref.data(), ldy);
  matmul_abs_reference(w, x.data(), ldx, c.n_tokens, abs_ref.data(), ldy);
  std::vector<uint8_t> scratch(matmul_scratch_bytes(c.type, c.n_cols, c.n_tokens));
  for (Isa isa : available_isas()) {
    SCOPED_TRACE(isa_name(isa));
    constexpr float kSentinel = 12345.0f;
    std::vector<float> y(ldy * c.n_tokens, kSentinel);
    matmul(wk, x.data(), ldx, c.n_tokens, y.data(), ldy, scratch, pool, isa);
    int bad = 0;
    for (int64_t t = 0; t < c.n_tokens; ++t) {
      for (int64_t r = 0; r < ldy; ++r) {
        const int64_t i = t * ldy + r;
        if (r >= c.n_rows) {
          ASSERT_EQ(y[i], kSentinel) << "wrote padding at t=" << t << " r=" << r;
          continue;
        }
        const double err = std::fabs(static_cast<double>(y[i]) - ref[i]);
        const double limit = tolerance(c.type) * abs_ref[i] + 1e-30;
        if (!(err <= limit) && ++bad <= 5) {
          ADD_FAILURE() << "t=" << t << " r=" << r << " got " << y[i] << " want " << ref[i]
                        << " (normalized error " << err / abs_ref[i] << ")";
        }
      }
    }
    EXPECT_EQ(bad, 0);
  }
}

TEST_P(MatmulTest, EveryIsaMatchesReferenceOnAwkwardShapes) {
  std::mt19937 rng(static_cast<uint32_t>(GetParam()) + 11);
  ThreadPool pool1(1);
  ThreadPool pool3(3);
  for (int64_t n_rows : {1, 7, 33, 257}) {
    for (int64_t n_cols : awkward_cols(GetParam())) {
      for (int64_t n_tokens : {1, 3, 17}) {
        check_case({GetParam(), n_rows, n_cols, n_tokens}, rng, n_rows % 2 ? pool3 : pool1);
      }
    }
  }
}

TEST_P(MatmulTest, LargeBatchAcrossRowChunks) {
  // Enough rows that prefill tiles walk several row chunks per thread.
  std::mt19937 rng(5);
  ThreadPool pool(2);
  check_case({GetParam(), 130, 1024, 64}, rng, pool);
  if (block_of(GetParam()) == kQK_K) check_case({GetParam(), 70, 5632, 5}, rng, pool);
  if (pack_supported(GetParam())) {
    check_case({GetParam(), 130, 1024, 64, true}, rng, pool);
    check_case({GetParam(), 96, 5632, 21, true}, rng, pool);
    // Activations over the L2 token block (tile_driver.inc): two blocks.
    check_case({GetParam(), 40, 5632, 70, true}, rng, pool);
  }
}

TEST_P(MatmulTest, PackedMatchesReferenceOnAwkwardShapes) {
  if (!pack_supported(GetParam())) GTEST_SKIP() << "not packable";
  std::mt19937 rng(static_cast<uint32_t>(GetParam()) + 23);
  ThreadPool pool1(1);
  ThreadPool pool2(2);
  ThreadPool pool3(3);
  for (int64_t n_rows : {1, 15, 16, 33, 48, 60, 120, 257}) {
    for (int64_t n_cols : awkward_cols(GetParam())) {
      for (int64_t n_tokens : {1, 2, 3, 9, 17}) {
        ThreadPool& pool = n_rows % 3 == 0 ? pool3 : n_rows % 2 ? pool2 : pool1;
        check_case({GetParam(), n_rows, n_cols, n_tokens, true}, rng, pool);
      }
    }
  }
}

// The largest quants (every quant byte 0xFF, or 0x7F = 127 for Q8_0) against
// activations of +-127:
// the int16 sums of the packed kernels at their worst case.
TEST_P(MatmulTest, PackedSumsHoldAtTheLargestQuants) {
  const DType type = GetParam();
  if (!pack_supported(type)) GTEST_SKIP() << "not packable";
  const int64_t n_rows = 80;
  const int64_t n_cols = 2 * std::max<int64_t>(32, block_of(type));
  const size_t rb = row_bytes(type, n_cols);
  std::vector<uint8_t> wq(rb * n_rows, type == DType::kQ8_0 ? 0x7F : 0xFF);
  // The fp16 scales (d, and the minima's dmin or m) set to small normal values.
  const int64_t nb = n_cols / block_of(type);
  const size_t block = rb / nb;
  const size_t d_at = type == DType::kQ6_K ? block - 2 : 0;
  const bool two = type == DType::kQ4_1 || type == DType::kQ4_K || type == DType::kQ5_K;
  for (int64_t i = 0; i < n_rows * nb; ++i) {
    const uint16_t h = f32_to_fp16(0.01f);
    std::memcpy(wq.data() + i * block + d_at, &h, 2);
    if (two) std::memcpy(wq.data() + i * block + 2, &h, 2);
  }
  const Matrix w{type, wq.data(), n_rows, n_cols};
  std::vector<uint8_t> packed(packed_bytes(type, n_rows, n_cols));
  const Matrix wp = pack(w, packed.data());
  ThreadPool pool(2);
  for (int64_t n_tokens : {1, 2, 5}) {
    for (float sign : {1.0f, -1.0f}) {
      std::vector<float> x(n_cols * n_tokens, sign);
      std::vector<float> ref(n_rows * n_tokens), abs_ref(n_rows * n_tokens);
      matmul_reference(w, x.data(), n_cols, n_tokens, ref.data(), n_rows);
      matmul_abs_reference(w, x.data(), n_cols, n_tokens, abs_ref.data(), n_rows);
      std::vector<uint8_t> scratch(matmul_scratch_bytes(type, n_cols, n_tokens));
      for (Isa isa : available_isas()) {
        std::vector<float> y(n_rows * n_tokens);
        matmul(wp, x.data(), n_cols, n_tokens, y.data(), n_rows, scratch, pool, isa);
        for (size_t i = 0; i < y.size(); ++i) {
          ASSERT_LE(std::fabs(y[i] - ref[i]), tolerance(type) * abs_ref[i])
              << isa_name(isa) << " tokens=" << n_tokens << " x=" << sign << " i=" << i;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, MatmulTest, ::testing::ValuesIn(kTypes),
                         [](const testing::TestParamInfo<DType>& info) {
                           return std::string(dtype_name(info.param));
                         });

TEST(Matmul, ActivationTypes) {
  EXPECT_EQ(activation_type(DType::kF32), DType::kF32);
  EXPECT_EQ(activation_type(DType::kF16), DType::kF16);
  EXPECT_EQ(activation_type(DType::kBF16), DType::kBF16);
  EXPECT_EQ(activation_type(DType::kQ8_0), DType::kQ8_0);
  EXPECT_EQ(activation_type(DType::kQ4_0), DType::kQ8_0);
  EXPECT_EQ(activation_type(DType::kQ5_0), DType::kQ8_0);
  EXPECT_EQ(activation_type(DType::kQ4_1), DType::kQ8_1);
  EXPECT_EQ(activation_type(DType::kQ4_K), DType::kQ8_K);
  EXPECT_EQ(activation_type(DType::kQ5_K), DType::kQ8_K);
  EXPECT_EQ(activation_type(DType::kQ6_K), DType::kQ8_K);
  EXPECT_EQ(matmul_scratch_bytes(DType::kQ6_K, 512, 3), 3 * 2 * sizeof(BlockQ8_K));
  // Two blocks (68 bytes) padded to 128, then two BlockSums of 12 bytes.
  EXPECT_EQ(matmul_scratch_bytes(DType::kQ4_0, 64, 3), 3 * (128 + 2 * 12));
}

TEST(Pack, SizesAndSupport) {
  EXPECT_TRUE(pack_supported(DType::kQ8_0));
  EXPECT_TRUE(pack_supported(DType::kQ4_0));
  EXPECT_TRUE(pack_supported(DType::kQ4_K));
  EXPECT_TRUE(pack_supported(DType::kQ6_K));
  EXPECT_TRUE(pack_supported(DType::kQ5_K));
  EXPECT_TRUE(pack_supported(DType::kQ4_1));
  EXPECT_TRUE(pack_supported(DType::kQ5_0));
  EXPECT_FALSE(pack_supported(DType::kF16));
  EXPECT_FALSE(pack_supported(DType::kBF16));
  EXPECT_EQ(packed_bytes(DType::kQ4_K, 17, 512), 32 * row_bytes(DType::kQ4_K, 512));
  EXPECT_FALSE(pack_preferred(DType::kF32));
  EXPECT_FALSE(pack_preferred(DType::kQ8_0, Isa::kPortable));
  EXPECT_EQ(packed_bytes(DType::kQ8_0, 32, 64), 32 * row_bytes(DType::kQ8_0, 64));
  EXPECT_EQ(packed_bytes(DType::kQ4_0, 17, 64), 32 * row_bytes(DType::kQ4_0, 64));
  EXPECT_EQ(packed_bytes(DType::kQ4_0, 0, 64), 0u);
  EXPECT_EQ(packed_bytes(DType::kQ4_1, 17, 64), 32 * row_bytes(DType::kQ4_1, 64));
  EXPECT_EQ(packed_bytes(DType::kQ5_0, 17, 64), 32 * row_bytes(DType::kQ5_0, 64));
}

TEST(Pack, InPlaceEqualsOutOfPlace) {
  std::mt19937 rng(3);
  ThreadPool pool(3);
  for (DType type : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ4_K,
                     DType::kQ5_K, DType::kQ6_K}) {
    for (int64_t n_rows : {5, 16, 40, 257}) {
      const int64_t n_cols = dtype_info(type)->block_size == kQK_K ? 768 : 160;
      const std::vector<float> wf = random_floats(n_rows * n_cols, rng);
      const size_t rb = row_bytes(type, n_cols);
      std::vector<uint8_t> in_place(packed_bytes(type, n_rows, n_cols), 0xAB);
      for (int64_t r = 0; r < n_rows; ++r) {
        ASSERT_TRUE(
            quantize_row(type, wf.data() + r * n_cols, in_place.data() + r * rb, n_cols).ok());
      }
      const std::vector<uint8_t> row_major(in_place.begin(), in_place.begin() + rb * n_rows);
      std::vector<uint8_t> out(in_place.size(), 0xCD);
      pack({type, row_major.data(), n_rows, n_cols}, out.data());
      // In place on three threads, as the weight store packs.
      const Matrix m = pack({type, in_place.data(), n_rows, n_cols}, in_place.data(), &pool);
      EXPECT_EQ(m.data, in_place.data());
      EXPECT_EQ(m.n_rows, n_rows);
      EXPECT_EQ(in_place, out) << dtype_name(type) << " rows=" << n_rows;
    }
  }
}

TEST(Pack, LayoutOfOneGroup) {
  // Row i, column c holds a value that names both, so the test reads the
  // format of matmul_kernels.h back byte by byte.
  const int64_t n_cols = 64;
  const int64_t nb = n_cols / 32;
  std::vector<BlockQ8_0> rows(16 * nb);
  for (int i = 0; i < 16; ++i) {
    for (int b = 0; b < nb; ++b) {
      rows[i * nb + b].d = static_cast<uint16_t>(1000 + 10 * i + b);
      for (int j = 0; j < 32; ++j)
        rows[i * nb + b].qs[j] = static_cast<int8_t>((i * 7 + b * 32 + j) % 127);
    }
  }
  std::vector<uint8_t> out(packed_bytes(DType::kQ8_0, 16, n_cols));
  pack({DType::kQ8_0, rows.data(), 16, n_cols}, out.data());
  const auto* scales = reinterpret_cast<const uint16_t*>(out.data());
  const auto* quants = reinterpret_cast<const int8_t*>(out.data() + nb * 16 * 2);
  for (int b = 0; b < nb; ++b) {
    for (int i = 0; i < 16; ++i) {
      EXPECT_EQ(scales[b * 16 + i], 1000 + 10 * i + b);
      for (int c = 0; c < 32; ++c) {
        EXPECT_EQ(quants[b * 512 + (c / 4) * 64 + i * 4 + c % 4], rows[i * nb + b].qs[c]);
      }
    }
  }
}

TEST(Matmul, IsaList) {
  const std::vector<Isa> isas = available_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), Isa::kPortable);
  bool has_best = false;
  for (Isa isa : isas) has_best |= isa == best_isa();
  EXPECT_TRUE(has_best);
  for (Isa isa : isas) std::printf("available isa: %s\n", std::string(isa_name(isa)).c_str());
}

TEST(Matmul, ZeroTokensOrRowsIsANoOp) {
  ThreadPool pool(2);
  std::vector<uint8_t> w(row_bytes(DType::kQ8_0, 32) * 4);
  const Matrix m{DType::kQ8_0, w.data(), 4, 32};
  float y = 7.0f;
  float x[32] = {};
  matmul(m, x, 32, 0, &y, 4, {}, pool);
  EXPECT_EQ(y, 7.0f);
}

}  // namespace
}  // namespace tandem::kernels
