#include "runtime/engine/kv_cache.h"

#include <algorithm>

#include "gtest/gtest.h"
#include "runtime/kernels/cpu/convert.h"

namespace tandem::engine {
namespace {

KvCacheConfig small_config() {
  KvCacheConfig c;
  c.n_layers = 2;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  c.max_sequences = 3;
  c.max_seq_len = 10;
  c.block_size = 4;
  return c;
}

TEST(KvCache, RejectsBadConfigs) {
  KvCacheConfig c = small_config();
  c.head_dim = 0;
  EXPECT_EQ(KvCache::Create(c).status().code(), absl::StatusCode::kInvalidArgument);
  c = small_config();
  c.block_size = -1;
  EXPECT_EQ(KvCache::Create(c).status().code(), absl::StatusCode::kInvalidArgument);
}

class KvCacheTypes : public ::testing::TestWithParam<DType> {};

TEST_P(KvCacheTypes, SequencesGetDisjointBlocksAndReturnThem) {
  KvCacheConfig c = small_config();
  c.type = GetParam();
  auto cache = KvCache::Create(c);
  ASSERT_TRUE(cache.ok());
  EXPECT_EQ(cache->bytes(), 2u * 9 * 2 * 2 * 4 * 4 * kv_element_bytes(c.type));
  EXPECT_EQ(cache->free_blocks(), 9);  // 3 blocks per sequence x 3 sequences
  ASSERT_TRUE(cache->open_sequence(0).ok());
  ASSERT_TRUE(cache->open_sequence(2).ok());
  EXPECT_EQ(cache->open_sequence(2).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cache->open_sequence(3).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(cache->reserve(0, 5).ok());
  ASSERT_TRUE(cache->reserve(2, 10).ok());
  EXPECT_EQ(cache->free_blocks(), 4);
  EXPECT_EQ(cache->reserve(0, 11).code(), absl::StatusCode::kOutOfRange);

  // Writes to one sequence never show up in another. Small integers and
  // quarters below 256 are exact in f16 too.
  auto key = [](int64_t il, int64_t p, int64_t h, int64_t d) {
    return il * 100.0f + p * 10 + h + d * 0.25f + 1;
  };
  float k[2 * 4], v[2 * 4], sevens[2 * 4];
  std::fill_n(sevens, 8, 7.0f);
  for (int64_t il = 0; il < 2; ++il) {
    for (int64_t p = 0; p < 10; ++p) {
      for (int64_t h = 0; h < 2; ++h) {
        for (int64_t d = 0; d < 4; ++d) {
          k[h * 4 + d] = key(il, p, h, d);
          v[h * 4 + d] = -key(il, p, h, d);
        }
      }
      cache->store(il, 2, p, k, v);
      if (p < 5) cache->store(il, 0, p, sevens, sevens);
    }
  }
  for (int64_t il = 0; il < 2; ++il) {
    const kernels::KvLayerView view = cache->layer_view(il);
    EXPECT_EQ(view.type, c.type);
    for (int64_t p = 0; p < 10; ++p) {
      for (int64_t h = 0; h < 2; ++h) {
        for (int64_t d = 0; d < 4; ++d) {
          EXPECT_EQ(cache->key_at(il, 2, p, h, d), key(il, p, h, d));
          EXPECT_EQ(cache->value_at(il, 2, p, h, d), -key(il, p, h, d));
          if (p < 5) {
            EXPECT_EQ(cache->key_at(il, 0, p, h, d), 7.0f);
          }
        }
        // The attention kernel's view reaches the same element.
        const int64_t at = view.block_tables[2][p / 4] * view.block_stride + h * view.head_stride +
                           (p % 4) * 4 + 1;
        const float from_view =
            c.type == DType::kF32
                ? static_cast<const float*>(view.v)[at]
                : kernels::fp16_to_f32(static_cast<const uint16_t*>(view.v)[at]);
        EXPECT_EQ(from_view, -key(il, p, h, 1));
      }
    }
  }
  cache->close_sequence(2);
  EXPECT_EQ(cache->free_blocks(), 7);
  EXPECT_FALSE(cache->is_open(2));
  cache->truncate(0, 4);
  EXPECT_EQ(cache->reserved_positions(0), 4);
}

INSTANTIATE_TEST_SUITE_P(F16AndF32, KvCacheTypes, ::testing::Values(DType::kF16, DType::kF32));

TEST(KvCache, RefusesOtherElementTypes) {
  KvCacheConfig c = small_config();
  c.type = DType::kQ8_0;
  EXPECT_EQ(KvCache::Create(c).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvCache, FullPoolIsResourceExhausted) {
  KvCacheConfig c = small_config();
  c.n_blocks = 4;
  auto cache = KvCache::Create(c);
  ASSERT_TRUE(cache.ok());
  ASSERT_TRUE(cache->open_sequence(0).ok());
  ASSERT_TRUE(cache->open_sequence(1).ok());
  ASSERT_TRUE(cache->reserve(0, 10).ok());
  EXPECT_EQ(cache->reserve(1, 8).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(cache->reserve(1, 4).ok());
}

}  // namespace
}  // namespace tandem::engine
