// Sub-communicators: rank translation, argument checks, nested splits, and TP
// groups and PP pairs of one world running at the same time without mixing.
#include "transport/split.h"

#include <numeric>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/transport/test_util.h"
#include "transport/local/local_world.h"

namespace tandem::transport {
namespace {

using testing::run_on_ranks;
using testing::test_deadline;

TEST(SplitTest, RejectsBadArguments) {
  auto comms = make_local_world(4);
  Communicator& c = *comms[1];
  const std::vector<int> ok = {1, 3};
  EXPECT_TRUE(c.split(ok, 0).ok());
  EXPECT_EQ(c.split(ok, kMaxGroupId).status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<int> without_me = {0, 2};
  EXPECT_EQ(c.split(without_me, 1).status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<int> unsorted = {3, 1};
  EXPECT_EQ(c.split(unsorted, 1).status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<int> outside = {1, 4};
  EXPECT_EQ(c.split(outside, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.split({}, 1).status().code(), absl::StatusCode::kInvalidArgument);
  auto sub = c.split(ok, 2);
  ASSERT_TRUE(sub.ok());
  EXPECT_EQ((*sub)->rank(), 0);
  EXPECT_EQ((*sub)->size(), 2);
  int x = 0;
  EXPECT_EQ((*sub)->isend(&x, 4, 2, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*sub)->isend(&x, 4, 1, 0xffffffffu).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// 8 ranks as TP = 4 x PP = 2: TP groups {0..3}, {4..7}; PP pairs {i, i + 4}.
// On every rank one thread runs TP all_reduces while another runs PP
// send/recv and all_reduces, with the same user tags in both groups.
TEST(SplitTest, TpGroupsAndPpPairsRunConcurrently) {
  constexpr int kTp = 4, kPp = 2, kIters = 40;
  auto comms = make_local_world(kTp * kPp);
  run_on_ranks(comms, [&](Communicator& world) {
    const int r = world.rank();
    const int pp_rank = r / kTp, tp_rank = r % kTp;
    std::vector<int> tp_ranks(kTp), pp_ranks(kPp);
    std::iota(tp_ranks.begin(), tp_ranks.end(), pp_rank * kTp);
    for (int i = 0; i < kPp; ++i) pp_ranks[i] = tp_rank + i * kTp;
    auto tp = world.split(tp_ranks, /*group_id=*/pp_rank);
    auto pp = world.split(pp_ranks, /*group_id=*/kPp + tp_rank);
    ASSERT_TRUE(tp.ok() && pp.ok());
    ASSERT_EQ((*tp)->rank(), tp_rank);
    ASSERT_EQ((*pp)->rank(), pp_rank);

    std::thread pp_thread([&] {
      Communicator& c = **pp;
      for (int iter = 0; iter < kIters; ++iter) {
        int32_t v = r * 1000 + iter;
        if (pp_rank == 0) {
          ASSERT_TRUE(c.send(&v, 4, 1, 7, test_deadline()).ok());
        } else {
          int32_t got = 0;
          ASSERT_TRUE(c.recv(&got, 4, 0, 7, test_deadline()).ok());
          EXPECT_EQ(got, tp_rank * 1000 + iter);
        }
        std::vector<float> x(1 + iter * 3001, static_cast<float>(pp_rank + 1));
        ASSERT_TRUE(
            c.all_reduce(x.data(), x.size(), DataType::kF32, ReduceOp::kSum, test_deadline()).ok());
        EXPECT_EQ(x.back(), 3.0f);
      }
    });
    Communicator& c = **tp;
    for (int iter = 0; iter < kIters; ++iter) {
      std::vector<int32_t> x(1 + iter * 2503, tp_rank + 10 * pp_rank);
      ASSERT_TRUE(
          c.all_reduce(x.data(), x.size(), DataType::kI32, ReduceOp::kSum, test_deadline()).ok());
      EXPECT_EQ(x.front(), 6 + 40 * pp_rank);
      // Same user tag as the PP thread, different group: never mixed.
      int32_t token = tp_rank;
      const int next = (tp_rank + 1) % kTp, prev = (tp_rank + kTp - 1) % kTp;
      int32_t got = -1;
      auto in = c.irecv(&got, 4, prev, 7);
      ASSERT_TRUE(in.ok());
      ASSERT_TRUE(c.send(&token, 4, next, 7, test_deadline()).ok());
      ASSERT_TRUE((*in)->wait(test_deadline()).ok());
      EXPECT_EQ(got, prev);
    }
    pp_thread.join();
    ASSERT_TRUE(world.barrier(test_deadline()).ok());
  });
}

TEST(SplitTest, NestedSplitTranslatesThroughToTheRoot) {
  auto comms = make_local_world(6);
  run_on_ranks(comms, [&](Communicator& world) {
    const int r = world.rank();
    // Halves {0,1,2}, {3,4,5}; then within each half the pair {1, 2}.
    std::vector<int> half(3);
    std::iota(half.begin(), half.end(), r < 3 ? 0 : 3);
    auto h = world.split(half, r < 3 ? 0 : 1);
    ASSERT_TRUE(h.ok());
    const int hr = (*h)->rank();
    int32_t sum = r;
    ASSERT_TRUE((*h)->all_reduce(&sum, 1, DataType::kI32, ReduceOp::kSum, test_deadline()).ok());
    EXPECT_EQ(sum, r < 3 ? 3 : 12);
    if (hr == 0) return;
    const std::vector<int> pair = {1, 2};
    auto p = (*h)->split(pair, r < 3 ? 2 : 3);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ((*p)->rank(), hr - 1);
    int32_t v = r;
    ASSERT_TRUE((*p)->all_reduce(&v, 1, DataType::kI32, ReduceOp::kSum, test_deadline()).ok());
    EXPECT_EQ(v, r < 3 ? 1 + 2 : 4 + 5);
    std::vector<int32_t> all(2);
    ASSERT_TRUE((*p)->all_gather(&v, all.data(), 1, DataType::kI32, test_deadline()).ok());
    EXPECT_EQ(all[0], v);
  });
}

}  // namespace
}  // namespace tandem::transport
