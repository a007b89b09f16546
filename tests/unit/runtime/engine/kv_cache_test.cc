#include "runtime/engine/kv_cache.h"

#include "gtest/gtest.h"

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

TEST(KvCache, SequencesGetDisjointBlocksAndReturnThem) {
  auto cache = KvCache::Create(small_config());
  ASSERT_TRUE(cache.ok());
  EXPECT_EQ(cache->free_blocks(), 9);  // 3 blocks per sequence x 3 sequences
  ASSERT_TRUE(cache->open_sequence(0).ok());
  ASSERT_TRUE(cache->open_sequence(2).ok());
  EXPECT_EQ(cache->open_sequence(2).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cache->open_sequence(3).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(cache->reserve(0, 5).ok());
  ASSERT_TRUE(cache->reserve(2, 10).ok());
  EXPECT_EQ(cache->free_blocks(), 4);
  EXPECT_EQ(cache->reserve(0, 11).code(), absl::StatusCode::kOutOfRange);

  // Writes to one sequence never show up in another.
  for (int64_t il = 0; il < 2; ++il) {
    for (int64_t p = 0; p < 10; ++p) {
      for (int64_t h = 0; h < 2; ++h) {
        *cache->key(il, 2, p, h) = 1000 + il * 100 + p * 10 + h;
        *cache->value(il, 2, p, h) = -(1000 + il * 100 + p * 10 + h);
        if (p < 5) *cache->key(il, 0, p, h) = 7;
      }
    }
  }
  for (int64_t il = 0; il < 2; ++il) {
    for (int64_t p = 0; p < 10; ++p) {
      for (int64_t h = 0; h < 2; ++h) {
        const float* kb = cache->key_block(il, 2, p / 4, h);
        EXPECT_EQ(kb[(p % 4) * 4], 1000 + il * 100 + p * 10 + h);
        EXPECT_EQ(cache->value_block(il, 2, p / 4, h)[(p % 4) * 4], -(1000 + il * 100 + p * 10 + h));
      }
    }
  }
  cache->close_sequence(2);
  EXPECT_EQ(cache->free_blocks(), 7);
  EXPECT_FALSE(cache->is_open(2));
  cache->truncate(0, 4);
  EXPECT_EQ(cache->reserved_positions(0), 4);
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
