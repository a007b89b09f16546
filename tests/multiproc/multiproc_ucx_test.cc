// The UCX backend across real processes on 127.0.0.1 (UCX_NET_DEVICES=lo, so
// no traffic leaves the box): point-to-point and the default collectives
// over TCP and over shared memory, and a rank killed with SIGKILL mid-run.
#include <gtest/gtest.h>

#include <string>

#include "tests/multiproc/process_group.h"

namespace tandem::testing {
namespace {

struct Run {
  int world = 2;
  std::string scenario;
  std::string tls;
  bool peer_failure = true;
};

void start(ProcessGroup& g, const Run& run) {
  uint16_t port = free_port();
  for (int r = 0; r < run.world; ++r) {
    std::map<std::string, std::string> env = {
        {"TANDEM_RANK", std::to_string(r)},
        {"TANDEM_WORLD_SIZE", std::to_string(run.world)},
        {"TANDEM_MASTER_ADDR", "127.0.0.1"},
        {"TANDEM_MASTER_PORT", std::to_string(port)},
        {"TANDEM_CLUSTER_TOKEN", "multiproc-ucx"},
        {"TANDEM_BOOTSTRAP_TIMEOUT_MS", "15000"},
        {"TANDEM_TEST_PEER_FAILURE", run.peer_failure ? "1" : "0"},
        {"UCX_TLS", run.tls},
        {"UCX_NET_DEVICES", "lo"},
        {"UCX_WARN_UNUSED_ENV_VARS", "n"},
    };
    g.spawn({TANDEM_WORKER_PATH, run.scenario}, env, "rank" + std::to_string(r));
  }
}

void expect_all_ok(const Run& run) {
  ProcessGroup g(make_temp_dir());
  start(g, run);
  ASSERT_TRUE(g.wait_all(std::chrono::seconds(40))) << g.describe();
  for (int r = 0; r < run.world; ++r) {
    EXPECT_TRUE(g.exited_ok(r)) << g.describe();
  }
  // The selected transports are logged.
  EXPECT_NE(g.err(0).find("tandem/ucx: rank 0: UCX_TLS=" + run.tls), std::string::npos)
      << g.describe();
}

TEST(MultiprocUcx, P2pOverTcp) { expect_all_ok({.world = 3, .scenario = "ucx_p2p", .tls = "tcp"}); }
TEST(MultiprocUcx, P2pOverSharedMemory) {
  expect_all_ok({.world = 2, .scenario = "ucx_p2p", .tls = "sm,self,tcp", .peer_failure = false});
}
TEST(MultiprocUcx, CollectivesOverTcp) {
  expect_all_ok({.world = 3, .scenario = "ucx_collectives", .tls = "tcp"});
}
TEST(MultiprocUcx, CollectivesOverSmSelfTcp) {
  expect_all_ok({.world = 2, .scenario = "ucx_collectives", .tls = "sm,self,tcp"});
}

TEST(MultiprocUcx, KilledRankIsUnavailableToSurvivors) {
  for (const char* tls : {"tcp", "sm,self,tcp"}) {
    ProcessGroup g(make_temp_dir());
    start(g, {.world = 3, .scenario = "ucx_kill", .tls = tls});
    ASSERT_TRUE(g.wait_all(std::chrono::seconds(30))) << g.describe();
    const auto& victim = g.child(2);
    EXPECT_TRUE(WIFSIGNALED(victim.status) && WTERMSIG(victim.status) == SIGKILL) << g.describe();
    for (int r = 0; r < 2; ++r) {
      std::string out = g.out(r);
      EXPECT_NE(out.find("DETECTED"), std::string::npos) << tls << "\n" << g.describe();
      bool unavailable = out.find("RESULT UNAVAILABLE") != std::string::npos;
      bool deadline = out.find("RESULT DEADLINE_EXCEEDED") != std::string::npos;
      EXPECT_TRUE(unavailable || deadline) << tls << "\n" << g.describe();
      // Within a few seconds: the wait's own deadline is 15 s.
      size_t at = out.find(" after ");
      ASSERT_NE(at, std::string::npos) << g.describe();
      EXPECT_LT(std::stoi(out.substr(at + 7)), 5000) << tls << "\n" << g.describe();
    }
  }
}

}  // namespace
}  // namespace tandem::testing
