// Rendezvous across real processes on 127.0.0.1: 2 and 3 ranks meet; a wrong
// token is refused on both sides; a missing rank is DEADLINE_EXCEEDED naming
// it; a rank whose store dies gets UNAVAILABLE.
#include <gtest/gtest.h>

#include <string>

#include "tests/multiproc/process_group.h"

namespace tandem::testing {
namespace {

struct Launch {
  int world = 2;
  std::string token = "s3cret-token";
  std::map<int, std::string> token_for;  // per-rank override
  std::vector<int> ranks;                // which ranks to start (default all)
  int timeout_ms = 10000;
  std::string scenario = "rendezvous";
  std::map<std::string, std::string> extra_env;
};

void start(ProcessGroup& g, const Launch& l) {
  uint16_t port = free_port();
  std::vector<int> ranks = l.ranks;
  if (ranks.empty()) {
    for (int r = 0; r < l.world; ++r) ranks.push_back(r);
  }
  for (int r : ranks) {
    std::map<std::string, std::string> env = l.extra_env;
    env["TANDEM_RANK"] = std::to_string(r);
    env["TANDEM_WORLD_SIZE"] = std::to_string(l.world);
    env["TANDEM_MASTER_ADDR"] = "127.0.0.1";
    env["TANDEM_MASTER_PORT"] = std::to_string(port);
    env["TANDEM_CLUSTER_TOKEN"] = l.token_for.count(r) ? l.token_for.at(r) : l.token;
    env["TANDEM_BOOTSTRAP_TIMEOUT_MS"] = std::to_string(l.timeout_ms);
    g.spawn({TANDEM_WORKER_PATH, l.scenario}, env, "rank" + std::to_string(r));
  }
}

TEST(MultiprocBootstrap, TwoAndThreeRanksMeet) {
  for (int world : {2, 3}) {
    ProcessGroup g(make_temp_dir());
    start(g, {.world = world});
    ASSERT_TRUE(g.wait_all(std::chrono::seconds(15))) << g.describe();
    for (int r = 0; r < world; ++r) {
      EXPECT_TRUE(g.exited_ok(r)) << g.describe();
      EXPECT_NE(g.out(r).find("RESULT OK"), std::string::npos) << g.describe();
    }
  }
}

TEST(MultiprocBootstrap, WrongTokenRefusedOnBothSides) {
  ProcessGroup g(make_temp_dir());
  start(g, {.world = 2, .token_for = {{1, "not-the-token"}}, .timeout_ms = 2000});
  ASSERT_TRUE(g.wait_all(std::chrono::seconds(10))) << g.describe();
  EXPECT_NE(g.out(1).find("RESULT PERMISSION_DENIED"), std::string::npos) << g.describe();
  EXPECT_NE(g.err(1).find("refused"), std::string::npos) << g.describe();
  EXPECT_NE(g.err(0).find("wrong cluster token"), std::string::npos) << g.describe();
  // Rank 0 never saw rank 1 join.
  EXPECT_NE(g.out(0).find("RESULT DEADLINE_EXCEEDED"), std::string::npos) << g.describe();
  EXPECT_NE(g.out(0).find("rank(s) 1 of 2"), std::string::npos) << g.describe();
}

TEST(MultiprocBootstrap, MissingRankIsDeadlineExceededNamingIt) {
  ProcessGroup g(make_temp_dir());
  auto t0 = std::chrono::steady_clock::now();
  start(g, {.world = 3, .ranks = {0, 1}, .timeout_ms = 1500});
  ASSERT_TRUE(g.wait_all(std::chrono::seconds(10))) << g.describe();
  auto elapsed = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(elapsed, std::chrono::milliseconds(1500 + 3000));
  for (int i = 0; i < 2; ++i) {
    EXPECT_NE(g.out(i).find("RESULT DEADLINE_EXCEEDED"), std::string::npos) << g.describe();
    EXPECT_NE(g.out(i).find("rank(s) 2 of 3"), std::string::npos) << g.describe();
  }
}

TEST(MultiprocBootstrap, NoStoreIsDeadlineExceeded) {
  ProcessGroup g(make_temp_dir());
  start(g, {.world = 2, .ranks = {1}, .timeout_ms = 1000});
  ASSERT_TRUE(g.wait_all(std::chrono::seconds(10))) << g.describe();
  EXPECT_NE(g.out(0).find("RESULT DEADLINE_EXCEEDED"), std::string::npos) << g.describe();
}

}  // namespace
}  // namespace tandem::testing
