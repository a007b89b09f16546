#include "partition/plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "absl/strings/str_cat.h"

namespace tandem::partition {
namespace {

using ::testing::HasSubstr;

// Storage of the test models: f32 norms, "q8_0" matrices (32 elements in 34
// bytes), so that slices are whole blocks only where the planner made them so.
constexpr int64_t kBlock = 32;
constexpr int64_t kBlockBytes = 34;

TensorDesc matrix(std::string name, int64_t n_rows, int64_t n_cols) {
  return {std::move(name), n_cols, n_rows, kBlock, kBlockBytes, "q8_0"};
}
TensorDesc vector_f32(std::string name, int64_t n) { return {std::move(name), n, 1, 1, 4, "f32"}; }

// A Llama of `d`'s dimensions in llama.cpp's tensor order, with a rope_freqs
// tensor that every rank holds whole.
ModelDesc llama(const ModelDims& d, bool tied = false) {
  ModelDesc m;
  m.name = "test";
  m.architecture = "llama";
  m.dims = d;
  m.tied_output = tied;
  m.context_length = 4096;
  const int64_t q = d.n_heads * d.head_dim, kv = d.n_kv_heads * d.head_dim;
  m.tensors.push_back(matrix("token_embd.weight", d.n_vocab, d.dim));
  m.tensors.push_back(vector_f32("rope_freqs.weight", d.head_dim / 2));
  for (int64_t il = 0; il < d.n_layers; ++il) {
    const std::string b = absl::StrCat("blk.", il, ".");
    m.tensors.push_back(vector_f32(b + "attn_norm.weight", d.dim));
    m.tensors.push_back(matrix(b + "attn_q.weight", q, d.dim));
    m.tensors.push_back(matrix(b + "attn_k.weight", kv, d.dim));
    m.tensors.push_back(matrix(b + "attn_v.weight", kv, d.dim));
    m.tensors.push_back(matrix(b + "attn_output.weight", d.dim, q));
    m.tensors.push_back(vector_f32(b + "ffn_norm.weight", d.dim));
    m.tensors.push_back(matrix(b + "ffn_gate.weight", d.ffn_dim, d.dim));
    m.tensors.push_back(matrix(b + "ffn_up.weight", d.ffn_dim, d.dim));
    m.tensors.push_back(matrix(b + "ffn_down.weight", d.dim, d.ffn_dim));
  }
  m.tensors.push_back(vector_f32("output_norm.weight", d.dim));
  if (!tied) m.tensors.push_back(matrix("output.weight", d.n_vocab, d.dim));
  return m;
}

ModelDims small_dims() {
  return {.n_layers = 7, .dim = 256, .n_heads = 8, .n_kv_heads = 4, .head_dim = 32,
          .ffn_dim = 704, .n_vocab = 1000, .col_align = kBlock};
}

// Bytes of `rows` rows of `cols` q8_0 columns.
int64_t q8(int64_t rows, int64_t cols) { return rows * (cols / kBlock) * kBlockBytes; }

// The budget of every rank of every layout tp 1..8 x pp 1..4, one node per
// stage, recomputed here from the rank's shard with the formulas written out.
TEST(MemoryBudget, EveryRankOfEveryLayout) {
  for (bool tied : {false, true}) {
    const ModelDims d = small_dims();
    const ModelDesc m = llama(d, tied);
    const Request req{.context = 100, .batch = 3, .prefill_chunk = 64};
    for (int tp = 1; tp <= 8; ++tp) {
      for (int pp = 1; pp <= 4; ++pp) {
        ClusterDesc c;
        c.nodes = pp;
        c.ranks_per_node = tp;
        c.node_memory_bytes = int64_t{1} << 40;
        c.os_reserve_bytes = 1000;
        auto e = evaluate_layout(m, c, req, tp, pp);
        ASSERT_TRUE(e.ok()) << e.status();
        EXPECT_TRUE(e->tp_within_nodes);
        // 8 heads / 4 KV heads split for tp 1, 2, 4, 8; the FFN (22 blocks)
        // for every tp up to 22.
        const bool splits = tp == 1 || tp == 2 || tp == 4 || tp == 8;
        ASSERT_EQ(e->fits, splits) << tp << "x" << pp << ": " << e->refusal;
        if (!splits) {
          EXPECT_THAT(e->refusal, HasSubstr(absl::StrCat("tp ", tp))) << e->refusal;
          continue;
        }
        ASSERT_EQ(e->ranks.size(), static_cast<size_t>(tp * pp));
        int64_t rank_sum = 0;
        for (int rank = 0; rank < tp * pp; ++rank) {
          const RankShard& s = e->shards[rank];
          const RankMemory& r = e->ranks[rank];
          const int64_t q_rows = s.q_heads.size() * d.head_dim;
          const int64_t kv_rows = s.kv_heads.size() * d.head_dim;
          int64_t weights = (d.head_dim / 2) * 4;  // rope_freqs, on every rank
          const int64_t per_layer = 2 * d.dim * 4 + q8(q_rows, d.dim) + 2 * q8(kv_rows, d.dim) +
                                    q8(d.dim, q_rows) + 2 * q8(s.ffn.size(), d.dim) +
                                    q8(d.dim, s.ffn.size());
          weights += s.layers.size() * per_layer;
          if (s.has_embedding || (s.has_head && tied)) weights += q8(s.vocab.size(), d.dim);
          if (s.has_head) weights += d.dim * 4 + (tied ? 0 : q8(s.vocab.size(), d.dim));
          EXPECT_EQ(r.weights, weights) << tp << "x" << pp << " rank " << rank;
          // 100 positions round up to 7 blocks of 16 = 112, for 3 sequences.
          EXPECT_EQ(r.kv_cache, s.layers.size() * kv_rows * 2 * 4 * 112 * 3);
          const int64_t ffn = s.ffn.size();
          EXPECT_EQ(r.workspace,
                    4 * 64 * (2 * d.dim + 2 * q_rows + 2 * kv_rows + 2 * ffn + d.head_dim +
                              std::max(d.dim, ffn)) +
                        (s.has_head ? 4 * 64 * d.n_vocab : 0));
          EXPECT_EQ(r.node, rank / tp);
          rank_sum += r.total();
        }
        int64_t node_sum = 0;
        for (const NodeMemory& n : e->nodes) {
          EXPECT_EQ(n.ranks.size(), static_cast<size_t>(tp));
          EXPECT_EQ(n.os_reserve, 1000);
          node_sum += n.total() - n.os_reserve;
        }
        EXPECT_EQ(node_sum, rank_sum);
        if (tp == 1) {
          // Without TP nothing but rope_freqs (and the tied table) is held twice.
          int64_t weights = 0;
          for (const RankMemory& r : e->ranks) weights += r.weights;
          int64_t expect = m.total_bytes() + (pp - 1) * (d.head_dim / 2) * 4;
          if (tied && pp > 1) expect += q8(d.n_vocab, d.dim);
          EXPECT_EQ(weights, expect) << pp;
        }
      }
    }
  }
}

TEST(BalanceStages, UniformLayersSplitLikeEvenStages) {
  for (int64_t n = 1; n <= 20; ++n) {
    for (int pp = 1; pp <= std::min<int64_t>(4, n); ++pp) {
      const std::vector<int64_t> bytes(n, 10);
      EXPECT_EQ(balance_stages(bytes, 0, 0, pp), even_stages(n, pp)) << n << " " << pp;
    }
  }
}

TEST(BalanceStages, EmbeddingAndHeadShiftLayers) {
  const std::vector<int64_t> bytes(8, 10);
  // Stage 0 = 25 + 10 k, stage 1 = 10 (8 - k): k = 3 gives 55 / 50.
  EXPECT_EQ(balance_stages(bytes, 25, 0, 2), (std::vector<Range>{{0, 3}, {3, 8}}));
  // A head of 25 on the last stage mirrors it.
  EXPECT_EQ(balance_stages(bytes, 0, 25, 2), (std::vector<Range>{{0, 5}, {5, 8}}));
  // A huge embedding still leaves stage 0 one layer, and every stage one.
  EXPECT_EQ(balance_stages(bytes, 1000, 0, 4),
            (std::vector<Range>{{0, 1}, {1, 4}, {4, 6}, {6, 8}}));
}

// The min-max against brute force over every split of random layer sizes.
TEST(BalanceStages, MatchesBruteForce) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    const int64_t n = 1 + rng() % 8;
    const int pp = 1 + static_cast<int>(rng() % std::min<int64_t>(4, n));
    std::vector<int64_t> bytes(n);
    for (int64_t& b : bytes) b = 1 + rng() % 50;
    const int64_t first = rng() % 60, last = rng() % 60;
    auto cost = [&](const std::vector<Range>& st) {
      int64_t worst = 0;
      for (size_t s = 0; s < st.size(); ++s) {
        int64_t b = (s == 0 ? first : 0) + (s + 1 == st.size() ? last : 0);
        for (int64_t il = st[s].begin; il < st[s].end; ++il) b += bytes[il];
        worst = std::max(worst, b);
      }
      return worst;
    };
    // Every choice of pp - 1 cut points in 1..n-1.
    int64_t best = INT64_MAX;
    std::vector<int64_t> cuts(pp + 1);
    auto search = [&](auto&& self, int s, int64_t from) -> void {
      if (s == pp - 1) {
        std::vector<Range> st;
        cuts[0] = 0;
        cuts[pp] = n;
        for (int k = 0; k < pp; ++k) st.push_back({cuts[k], cuts[k + 1]});
        best = std::min(best, cost(st));
        return;
      }
      for (int64_t c = from; c <= n - (pp - 1 - s); ++c) {
        cuts[s + 1] = c;
        self(self, s + 1, c + 1);
      }
    };
    search(search, 0, 1);
    const std::vector<Range> got = balance_stages(bytes, first, last, pp);
    ASSERT_EQ(got.size(), static_cast<size_t>(pp));
    for (const Range& r : got) EXPECT_FALSE(r.empty());
    EXPECT_EQ(got.front().begin, 0);
    EXPECT_EQ(got.back().end, n);
    EXPECT_EQ(cost(got), best) << "trial " << trial;
  }
}

TEST(SyncPoints, ListedPerStageWithTheirLinks) {
  const ModelDims d{.n_layers = 5, .dim = 1024, .n_heads = 8, .n_kv_heads = 8, .head_dim = 128,
                    .ffn_dim = 4096, .n_vocab = 1000, .col_align = 32};
  ClusterDesc c;
  c.nodes = 2;
  c.ranks_per_node = 2;
  const std::vector<Range> stages{{0, 3}, {3, 5}};
  const std::vector<SyncPoint> s = sync_points(d, 2, stages, c);
  ASSERT_EQ(s.size(), 8u);
  auto expect = [&](size_t i, const std::string& what, SyncKind kind, int stage, int64_t count,
                    int64_t bytes, bool crosses, bool decode_only) {
    EXPECT_EQ(s[i].what, what);
    EXPECT_EQ(s[i].kind, kind) << what;
    EXPECT_EQ(s[i].stage, stage) << what;
    EXPECT_EQ(s[i].count, count) << what;
    EXPECT_EQ(s[i].bytes_per_token, bytes) << what;
    EXPECT_EQ(s[i].crosses_nodes, crosses) << what;
    EXPECT_EQ(s[i].decode_only, decode_only) << what;
  };
  expect(0, "stage 0 embedding all_reduce", SyncKind::kAllReduce, 0, 1, 4096, false, false);
  expect(1, "stage 0 attention output all_reduce", SyncKind::kAllReduce, 0, 3, 4096, false, false);
  expect(2, "stage 0 FFN output all_reduce", SyncKind::kAllReduce, 0, 3, 4096, false, false);
  expect(3, "stage 1 attention output all_reduce", SyncKind::kAllReduce, 1, 2, 4096, false, false);
  expect(4, "stage 1 FFN output all_reduce", SyncKind::kAllReduce, 1, 2, 4096, false, false);
  expect(5, "stage 1 logits gather", SyncKind::kGather, 1, 1, 500 * 4, false, true);
  expect(6, "stage 0 -> 1 hidden state send", SyncKind::kSend, 0, 1, 2 * 4096, true, false);
  expect(7, "stage 1 -> rank 0 sampled token send", SyncKind::kSend, 1, 1, 4, true, true);

  // tp 4 on nodes of 2 ranks: the TP group spans both nodes.
  const std::vector<Range> one{{0, 5}};
  for (const SyncPoint& p : sync_points(d, 4, one, c)) EXPECT_TRUE(p.crosses_nodes) << p.what;
  EXPECT_TRUE(sync_points(d, 1, one, c).empty());
}

TEST(CostModel, WireBytesAndSeconds) {
  ClusterDesc c;
  c.link_bandwidth = 100;
  c.link_latency = 0.5;
  c.local_bandwidth = 1000;
  c.local_latency = 0.01;
  const SyncPoint ar{"ar", SyncKind::kAllReduce, 0, 3, 40, 4, true, false};
  EXPECT_DOUBLE_EQ(wire_bytes(ar, 2), 2.0 * 3 / 4 * 80);  // ring: 2 (p-1)/p x payload
  EXPECT_DOUBLE_EQ(sync_seconds(ar, 2, c), 3 * (0.5 + 120.0 / 100));
  const SyncPoint gather{"g", SyncKind::kGather, 0, 1, 10, 4, false, true};
  EXPECT_DOUBLE_EQ(wire_bytes(gather, 5), 3 * 50.0);
  EXPECT_DOUBLE_EQ(sync_seconds(gather, 5, c), 0.01 + 150.0 / 1000);
  const SyncPoint send{"s", SyncKind::kSend, 0, 1, 8, 2, true, false};
  EXPECT_DOUBLE_EQ(sync_seconds(send, 2, c), 0.5 + 16.0 / 100);
}

// Two stages on two nodes, numbers small enough to follow by hand.
TEST(CostModel, HandComputedTwoStages) {
  ClusterDesc c;
  c.nodes = 2;
  c.memory_bandwidth = 1000;
  c.compute = 1000;
  c.link_bandwidth = 100;
  c.link_latency = 0.5;
  const Request req{.context = 10, .batch = 2, .prefill_chunk = 5};
  std::vector<RankWork> ranks(2);
  ranks[0] = {.rank = 0, .stage = 0, .node = 0, .weight_bytes_read = 1000, .matmul_macs = 100,
              .kv_bytes_per_position = 10, .attention_macs_per_position = 2};
  ranks[1] = {.rank = 1, .stage = 1, .node = 1, .weight_bytes_read = 2000, .matmul_macs = 300,
              .kv_bytes_per_position = 20, .attention_macs_per_position = 4};
  const std::vector<SyncPoint> syncs{{"send", SyncKind::kSend, 0, 1, 8, 2, true, false},
                                     {"token", SyncKind::kSend, 1, 1, 4, 2, true, true}};
  const CostEstimate e = estimate_cost(ranks, 2, syncs, c, req);
  // Decode, B = 2 sequences at L = 10:
  //   stage 0: bytes 1000 + 2*10*10 = 1200 -> 1.2 s; flops 2*2*(100 + 10*2) = 480 -> 0.48 s
  //   stage 1: bytes 2000 + 2*10*20 = 2400 -> 2.4 s; flops 2*2*(300 + 10*4) = 1360 -> 1.36 s
  //   sends: (0.5 + 2*8/100) + (0.5 + 2*4/100) = 0.66 + 0.58
  ASSERT_EQ(e.decode_stage_s.size(), 2u);
  EXPECT_DOUBLE_EQ(e.decode_stage_s[0], 1.2);
  EXPECT_DOUBLE_EQ(e.decode_stage_s[1], 2.4);
  EXPECT_DOUBLE_EQ(e.decode_sync_s, 0.66 + 0.58);
  EXPECT_DOUBLE_EQ(e.decode_step_s, 1.2 + 2.4 + 0.66 + 0.58);
  EXPECT_DOUBLE_EQ(e.decode_tokens_per_s, 2 / (1.2 + 2.4 + 0.66 + 0.58));
  // Prefill per token, T = 5, L/2 = 5 positions:
  //   stage 0: bytes (1000 + 5*10)/5 + 10 = 220 -> 0.22 s; flops 2*(100 + 5*2) = 220 -> 0.22 s
  //   stage 1: bytes (2000 + 5*20)/5 + 20 = 440 -> 0.44 s; flops 2*(300 + 5*4) = 640 -> 0.64 s
  //   the slowest stage 0.64 s, plus the hidden-state send for 5 tokens per 5 tokens:
  //   (0.5 + 5*8/100) / 5 = 0.18 s; the sampled-token send is decode only.
  EXPECT_DOUBLE_EQ(e.prefill_sync_s, 0.18);
  EXPECT_DOUBLE_EQ(e.prefill_token_s, 0.64 + 0.18);
  EXPECT_DOUBLE_EQ(e.prefill_tokens_per_s, 1 / 0.82);
}

// Ranks of one stage on one node share its bandwidth.
TEST(CostModel, RanksOfANodeShareItsBandwidth) {
  ClusterDesc c;
  c.nodes = 1;
  c.ranks_per_node = 2;
  c.memory_bandwidth = 1000;
  c.compute = 1e12;
  const Request req{.context = 1, .batch = 1, .prefill_chunk = 1};
  std::vector<RankWork> ranks(2);
  ranks[0] = {.rank = 0, .stage = 0, .node = 0, .weight_bytes_read = 500};
  ranks[1] = {.rank = 1, .stage = 0, .node = 0, .weight_bytes_read = 700};
  const CostEstimate e = estimate_cost(ranks, 1, {}, c, req);
  EXPECT_DOUBLE_EQ(e.decode_step_s, 1.2);
}

// A rank that reads slower than its node (a CPU rank's threads) bounds the
// node's stage: two such ranks reading at once get the node's bandwidth, one
// alone only its own.
TEST(CostModel, ARankReadsNoFasterThanItsOwnBandwidth) {
  ClusterDesc c;
  c.nodes = 1;
  c.ranks_per_node = 2;
  c.memory_bandwidth = 1000;
  c.rank_memory_bandwidth = 600;
  c.compute = 1e12;
  const Request req{.context = 1, .batch = 1, .prefill_chunk = 1};
  std::vector<RankWork> tp(2);  // one stage, both ranks read half
  tp[0] = {.rank = 0, .stage = 0, .node = 0, .weight_bytes_read = 600};
  tp[1] = {.rank = 1, .stage = 0, .node = 0, .weight_bytes_read = 600};
  EXPECT_DOUBLE_EQ(estimate_cost(tp, 1, {}, c, req).decode_step_s, 1.2);  // the node's 1000
  std::vector<RankWork> pp(2);  // two stages, one rank each, one after the other
  pp[0] = {.rank = 0, .stage = 0, .node = 0, .weight_bytes_read = 600};
  pp[1] = {.rank = 1, .stage = 1, .node = 0, .weight_bytes_read = 600};
  EXPECT_DOUBLE_EQ(estimate_cost(pp, 2, {}, c, req).decode_step_s, 2.0);  // 600 each
  c.rank_memory_bandwidth = 0;  // no limit: one rank alone reads at the node's speed
  EXPECT_DOUBLE_EQ(estimate_cost(pp, 2, {}, c, req).decode_step_s, 1.2);
}

ClusterDesc two_nodes(int64_t memory) {
  ClusterDesc c;
  c.nodes = 2;
  c.ranks_per_node = 1;
  c.node_memory_bytes = memory;
  c.os_reserve_bytes = 0;
  return c;
}

TEST(MakePlan, PicksTheFastestDecodeAndSaysWhy) {
  const ModelDesc m = llama(small_dims());
  const Request req{.context = 64, .batch = 1, .prefill_chunk = 16};
  ClusterDesc c = two_nodes(int64_t{1} << 30);
  c.link_latency = 1e-9;  // a free link: TP halves every stage's reads
  auto plan = make_plan(m, c, req);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->layouts.size(), 2u);
  EXPECT_EQ(plan->layouts[0].name(), "tp1 x pp2");
  EXPECT_EQ(plan->layouts[1].name(), "tp2 x pp1");
  EXPECT_EQ(plan->layout().name(), "tp2 x pp1");
  EXPECT_THAT(plan->reason, HasSubstr("fastest predicted decode of the 2 layouts that fit"));
  EXPECT_THAT(plan->reason, HasSubstr("for tp1 x pp2"));
  EXPECT_THAT(plan->reason, HasSubstr("TP groups span nodes"));
  ASSERT_EQ(plan->tensor_shards.size(), 2u);
  EXPECT_EQ(plan->tensor_shards[0].front().name, "token_embd.weight");

  c.link_latency = 1.0;  // a slow link: 15 all_reduces a token cost more than TP saves
  plan = make_plan(m, c, req);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->layout().name(), "tp1 x pp2");
}

TEST(MakePlan, OnlyTheLayoutThatFits) {
  const ModelDesc m = llama(small_dims());
  const Request req{.context = 16, .batch = 1, .prefill_chunk = 16};
  // tp1 x pp2 puts the embedding and 3 layers on node 0 and the head and 4
  // layers on node 1, both above what tp2 x pp1 needs per node; find a memory
  // size between the two.
  ClusterDesc c = two_nodes(int64_t{1} << 30);
  auto both = make_plan(m, c, req);
  ASSERT_TRUE(both.ok());
  auto node_max = [](const LayoutEval& e) {
    int64_t worst = 0;
    for (const NodeMemory& n : e.nodes) worst = std::max(worst, n.total());
    return worst;
  };
  const int64_t pp_need = node_max(both->layouts[0]), tp_need = node_max(both->layouts[1]);
  ASSERT_LT(tp_need, pp_need);
  c.node_memory_bytes = tp_need;
  c.link_latency = 10;  // TP would lose on speed, but PP does not fit
  auto plan = make_plan(m, c, req);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->layout().name(), "tp2 x pp1");
  EXPECT_EQ(plan->reason.rfind("the only layout of 2 that fits", 0), 0u) << plan->reason;
  EXPECT_FALSE(plan->layouts[0].fits);
  EXPECT_THAT(plan->layouts[0].refusal, HasSubstr(absl::StrCat("but has ", tp_need)));
}

TEST(MakePlan, RefusalsNameTheNumbers) {
  const ModelDesc m = llama(small_dims());
  const Request req{.context = 16, .batch = 1, .prefill_chunk = 16};
  ClusterDesc c = two_nodes(100000);

  Request forced = req;
  forced.tp = 2;
  auto st = make_plan(m, c, forced).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(st.message()), HasSubstr("tp2 x pp1 for 'test': node 0 needs "));
  EXPECT_THAT(std::string(st.message()), HasSubstr("bytes ("));
  EXPECT_THAT(std::string(st.message()), HasSubstr("but has 100000 (0.0 GiB)"));

  st = make_plan(m, c, req).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("no layout of 2 nodes x 1 ranks per node = 2 ranks fits 'test'"));
  EXPECT_THAT(std::string(st.message()), HasSubstr("tp1 x pp2: node 0 needs"));
  EXPECT_THAT(std::string(st.message()), HasSubstr("tp2 x pp1: node 0 needs"));
  EXPECT_THAT(std::string(st.message()), HasSubstr("not even the weights fit"));

  c.nodes = 3;
  forced.tp = 3;
  c.node_memory_bytes = int64_t{1} << 30;
  st = make_plan(m, c, forced).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("tp3 x pp1 for 'test': tp 3 cannot split"));

  forced.tp = 2;
  st = make_plan(m, c, forced).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("the requested tp 2 does not fill the cluster's 3 nodes"));

  c.nodes = 2;
  forced.pp = 2;
  st = make_plan(m, c, forced).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("tp 2 x pp 2 does not fill"));
}

TEST(MakePlan, KvRoomIsReportedWhenTheWeightsFit) {
  const ModelDesc m = llama(small_dims());
  Request req{.context = 4096, .batch = 64, .prefill_chunk = 16, .tp = 2};
  ClusterDesc c = two_nodes(int64_t{64} << 20);
  auto st = make_plan(m, c, req).status();
  ASSERT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  auto e = evaluate_layout(m, c, req, 2, 1);
  ASSERT_TRUE(e.ok());
  EXPECT_GT(e->max_kv_positions, 0);
  EXPECT_THAT(std::string(st.message()),
              HasSubstr(absl::StrCat("at most ", e->max_kv_positions, " positions of KV cache")));
  // That many positions do fit, one block more does not.
  const int64_t per_sequence = e->max_kv_positions / 16 * 16;
  req.context = per_sequence;
  req.batch = 1;
  EXPECT_TRUE(make_plan(m, c, req).ok());
  req.context = per_sequence + 16;
  EXPECT_FALSE(make_plan(m, c, req).ok());
}

TEST(MakePlan, BadModelsAreRefusedClearly) {
  const Request req{.context = 16, .batch = 1, .prefill_chunk = 16};
  const ClusterDesc c = two_nodes(int64_t{1} << 30);
  ModelDesc moe = llama(small_dims());
  moe.architecture = "llama4";
  moe.n_experts = 128;
  moe.n_experts_used = 1;
  auto st = make_plan(moe, c, req).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(st.message()), HasSubstr("mixture of experts (128 experts, 1 used"));

  ModelDesc other = llama(small_dims());
  other.architecture = "mamba";
  st = make_plan(other, c, req).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(st.message()), HasSubstr("architecture 'mamba'"));

  ModelDesc missing = llama(small_dims());
  std::erase_if(missing.tensors, [](const TensorDesc& t) { return t.name == "blk.6.ffn_up.weight"; });
  st = make_plan(missing, c, req).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("has no tensor 'blk.6.ffn_up.weight'"));

  ModelDesc reshaped = llama(small_dims());
  for (TensorDesc& t : reshaped.tensors) {
    if (t.name == "blk.0.attn_k.weight") t.n_rows = 64;
  }
  st = make_plan(reshaped, c, req).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("'blk.0.attn_k.weight' of model 'test' is 64 x 256"));

  ModelDesc huge = llama(small_dims());
  huge.dims.n_layers = int64_t{1} << 40;
  st = make_plan(huge, c, req).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("beyond any real model"));

  Request bad = req;
  bad.batch = 0;
  EXPECT_EQ(make_plan(llama(small_dims()), c, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = req;
  bad.context = int64_t{1} << 41;
  EXPECT_EQ(make_plan(llama(small_dims()), c, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  ClusterDesc no_bw = c;
  no_bw.memory_bandwidth = 0;
  EXPECT_EQ(make_plan(llama(small_dims()), no_bw, req).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tandem::partition
