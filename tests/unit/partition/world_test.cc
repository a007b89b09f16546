// Every rank of every layout up to 64 ranks, checked against the definition.
#include "partition/world.h"

#include <algorithm>
#include <set>

#include "gtest/gtest.h"

namespace tandem::partition {
namespace {

TEST(World, RejectsBadLayouts) {
  EXPECT_EQ(World::Create(0, 1, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(World::Create(2, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(World::Create(2, 2, 4).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(World::Create(2, 2, -1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(World, EveryRankOfEveryLayout) {
  for (int tp = 1; tp <= 8; ++tp) {
    for (int pp = 1; pp <= 8; ++pp) {
      std::set<std::pair<int, int>> coords;
      for (int r = 0; r < tp * pp; ++r) {
        auto w = World::Create(tp, pp, r);
        ASSERT_TRUE(w.ok());
        SCOPED_TRACE(testing::Message() << "tp " << tp << " pp " << pp << " rank " << r);
        EXPECT_EQ(w->size(), tp * pp);
        EXPECT_EQ(w->rank_of(w->pp_rank(), w->tp_rank()), r);
        EXPECT_TRUE(coords.insert({w->pp_rank(), w->tp_rank()}).second);
        EXPECT_EQ(w->is_first_stage(), w->pp_rank() == 0);
        EXPECT_EQ(w->is_last_stage(), w->pp_rank() == pp - 1);

        const std::vector<int> tp_group = w->tp_group();
        ASSERT_EQ(static_cast<int>(tp_group.size()), tp);
        EXPECT_TRUE(std::is_sorted(tp_group.begin(), tp_group.end()));
        EXPECT_NE(std::find(tp_group.begin(), tp_group.end(), r), tp_group.end());
        EXPECT_EQ(tp_group.back() - tp_group.front(), tp - 1);  // consecutive ranks
        for (int m : tp_group) EXPECT_EQ(World::Create(tp, pp, m)->pp_rank(), w->pp_rank());

        const std::vector<int> pp_group = w->pp_group();
        ASSERT_EQ(static_cast<int>(pp_group.size()), pp);
        EXPECT_TRUE(std::is_sorted(pp_group.begin(), pp_group.end()));
        EXPECT_EQ(pp_group[w->pp_rank()], r);
        for (int m : pp_group) EXPECT_EQ(World::Create(tp, pp, m)->tp_rank(), w->tp_rank());

        EXPECT_EQ(w->prev_stage_rank(), w->is_first_stage() ? -1 : r - tp);
        EXPECT_EQ(w->next_stage_rank(), w->is_last_stage() ? -1 : r + tp);
      }
      EXPECT_EQ(static_cast<int>(coords.size()), tp * pp);
    }
  }
}

TEST(World, TpGroupsStayInsideNodes) {
  EXPECT_TRUE(World::Create(2, 2, 0)->tp_groups_within_nodes(2));
  EXPECT_TRUE(World::Create(2, 2, 0)->tp_groups_within_nodes(4));
  EXPECT_FALSE(World::Create(4, 1, 0)->tp_groups_within_nodes(2));
  EXPECT_TRUE(World::Create(1, 4, 0)->tp_groups_within_nodes(1));
}

}  // namespace
}  // namespace tandem::partition
