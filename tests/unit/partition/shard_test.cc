#include "partition/shard.h"

#include <gtest/gtest.h>

#include <map>

namespace tandem::partition {
namespace {

ModelDims tiny_like() {
  return {.n_layers = 7, .dim = 256, .n_heads = 8, .n_kv_heads = 4, .head_dim = 32,
          .ffn_dim = 704, .n_vocab = 1001, .col_align = 32};
}

TEST(SplitRange, CoversEvenlyInWholeGroups) {
  for (int64_t n : {0, 1, 7, 32, 100, 704, 1001}) {
    for (int64_t parts = 1; parts <= 8; ++parts) {
      for (int64_t align : {1, 32}) {
        int64_t next = 0;
        int64_t smallest = n, largest = 0;
        for (int64_t p = 0; p < parts; ++p) {
          const Range r = split_range(n, parts, p, align);
          ASSERT_EQ(r.begin, next) << n << " " << parts << " " << p;
          ASSERT_GE(r.end, r.begin);
          if (p + 1 < parts) {
            EXPECT_EQ(r.size() % align, 0);
          }
          smallest = std::min(smallest, r.size() / align);
          largest = std::max(largest, r.size() / align);
          next = r.end;
        }
        EXPECT_EQ(next, n);
        EXPECT_LE(largest - smallest, 1);
      }
    }
  }
}

// Every rank of every layout tp 1..8 x pp 1..4 that the model admits: the
// TP ranks of a stage partition the heads, FFN and vocabulary; each rank's
// query heads use only the KV heads it holds; stages partition the layers.
TEST(RankShard, EveryLayoutPartitionsTheModel) {
  for (const ModelDims& d : {tiny_like(), ModelDims{.n_layers = 16, .dim = 2048, .n_heads = 32,
                                                     .n_kv_heads = 8, .head_dim = 64,
                                                     .ffn_dim = 5632, .n_vocab = 32000,
                                                     .col_align = 256}}) {
    for (int tp = 1; tp <= 8; ++tp) {
      for (int pp = 1; pp <= 4; ++pp) {
        std::vector<int> q_owner(d.n_heads, 0), ffn_owner(d.ffn_dim, 0), vocab_owner(d.n_vocab, 0);
        std::vector<int> layer_owner(d.n_layers, 0);
        bool admitted = true;
        for (int rank = 0; rank < tp * pp; ++rank) {
          const World w = World::Create(tp, pp, rank).value();
          auto shard = make_rank_shard(d, w);
          if (!shard.ok()) {
            admitted = false;
            EXPECT_EQ(shard.status().code(), absl::StatusCode::kInvalidArgument);
            EXPECT_NE(shard.status().message().find("tp " + std::to_string(tp)), std::string::npos)
                << shard.status();
            break;
          }
          const RankShard& s = *shard;
          EXPECT_EQ(s.has_embedding, w.is_first_stage());
          EXPECT_EQ(s.has_head, w.is_last_stage());
          if (w.tp_rank() == 0) {
            for (int64_t il = s.layers.begin; il < s.layers.end; ++il) ++layer_owner[il];
          }
          if (w.pp_rank() != 0) continue;
          const int64_t group = d.n_heads / d.n_kv_heads;
          for (int64_t h = s.q_heads.begin; h < s.q_heads.end; ++h) {
            ++q_owner[h];
            EXPECT_TRUE(s.kv_heads.contains(h / group)) << "head " << h << " rank " << rank;
          }
          EXPECT_EQ((s.q_heads.begin * d.head_dim) % d.col_align, 0);
          EXPECT_EQ(s.ffn.begin % d.col_align, 0);
          EXPECT_FALSE(s.ffn.empty());
          for (int64_t i = s.ffn.begin; i < s.ffn.end; ++i) ++ffn_owner[i];
          EXPECT_LE(s.vocab.size(), s.vocab_stride);
          EXPECT_EQ(s.vocab.begin, w.tp_rank() * s.vocab_stride);
          for (int64_t i = s.vocab.begin; i < s.vocab.end; ++i) ++vocab_owner[i];
        }
        if (!admitted) {
          // Refused only where the rules say so.
          const bool heads_ok = d.n_kv_heads % tp == 0 ||
                                (tp % d.n_kv_heads == 0 && d.n_heads % tp == 0);
          EXPECT_TRUE(!heads_ok || pp > d.n_layers ||
                      (d.n_heads / tp * d.head_dim) % d.col_align != 0)
              << "tp " << tp << " pp " << pp;
          continue;
        }
        for (int c : q_owner) EXPECT_EQ(c, 1);
        for (int c : ffn_owner) EXPECT_EQ(c, 1);
        for (int c : vocab_owner) EXPECT_EQ(c, 1);
        for (int c : layer_owner) EXPECT_EQ(c, 1);
      }
    }
  }
}

TEST(RankShard, ReplicatesKvHeadsWhenTpExceedsThem) {
  ModelDims d = tiny_like();
  d.n_kv_heads = 2;
  for (int r = 0; r < 8; ++r) {
    const RankShard s = make_rank_shard(d, World::Create(8, 1, r).value()).value();
    EXPECT_EQ(s.q_heads, (Range{r, r + 1}));
    EXPECT_EQ(s.kv_heads, (Range{r / 4, r / 4 + 1}));
  }
}

TEST(RankShard, RefusesWhatItCannotSplit) {
  ModelDims d = tiny_like();
  auto three = make_rank_shard(d, World::Create(3, 1, 0).value());
  ASSERT_FALSE(three.ok());
  EXPECT_NE(three.status().message().find("4 KV heads"), std::string::npos) << three.status();
  EXPECT_FALSE(make_rank_shard(d, World::Create(1, 8, 0).value()).ok());  // 7 layers
  d.head_dim = 16;
  d.dim = 128;
  auto unaligned = make_rank_shard(d, World::Create(8, 1, 0).value());
  ASSERT_FALSE(unaligned.ok());
  EXPECT_NE(unaligned.status().message().find("32-column"), std::string::npos);
  const std::vector<Range> gap = {{0, 3}, {4, 7}};
  EXPECT_FALSE(make_rank_shard(tiny_like(), World::Create(1, 2, 0).value(), gap).ok());
  const std::vector<Range> custom = {{0, 5}, {5, 7}};
  EXPECT_EQ(make_rank_shard(tiny_like(), World::Create(1, 2, 1).value(), custom)->layers,
            (Range{5, 7}));
}

// Summed over a TP group, the sliced tensors hold each element exactly once,
// except replicated tensors (and replicated KV heads).
TEST(TensorShards, TpGroupHoldsEveryElementOnce) {
  const ModelDims d = tiny_like();
  for (bool tied : {false, true}) {
    std::map<std::string, int64_t> whole, held;
    for (int r = 0; r < 4; ++r) {
      const RankShard s = make_rank_shard(d, World::Create(4, 1, r).value()).value();
      for (const TensorShard& t : tensor_shards(d, s, tied)) {
        whole[t.name] = t.n_rows * t.n_cols;
        held[t.name] += t.rows.size() * t.cols.size();
        EXPECT_LE(t.rows.end, t.n_rows);
        EXPECT_LE(t.cols.end, t.n_cols);
      }
    }
    EXPECT_EQ(held.count("output.weight"), tied ? 0u : 1u);
    for (const auto& [name, n] : whole) {
      const bool replicated = name.find("norm") != std::string::npos;
      EXPECT_EQ(held[name], replicated ? 4 * n : n) << name;
    }
    EXPECT_EQ(whole.size(), 7u * 9 + (tied ? 2 : 3));
  }
}

TEST(TensorShards, StagesHoldTheirLayersAndEnds) {
  const ModelDims d = tiny_like();
  const RankShard first = make_rank_shard(d, World::Create(1, 2, 0).value()).value();
  const RankShard last = make_rank_shard(d, World::Create(1, 2, 1).value()).value();
  auto names = [&](const RankShard& s, bool tied) {
    std::vector<std::string> n;
    for (const TensorShard& t : tensor_shards(d, s, tied)) n.push_back(t.name);
    return n;
  };
  const auto f = names(first, false);
  EXPECT_EQ(f.front(), "token_embd.weight");
  EXPECT_EQ(f.size(), 1u + 4 * 9);
  EXPECT_EQ(f.back(), "blk.3.ffn_down.weight");
  const auto l = names(last, false);
  EXPECT_EQ(l[0], "output_norm.weight");
  EXPECT_EQ(l[1], "output.weight");
  EXPECT_EQ(l[2], "blk.4.attn_norm.weight");
  EXPECT_EQ(names(last, true)[0], "token_embd.weight");
}

}  // namespace
}  // namespace tandem::partition
