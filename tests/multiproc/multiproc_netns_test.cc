// The UCX backend between two "hosts": rank 0 in one network namespace and
// rank 1 in another, joined only by a veth pair (see netns_pair.h). The
// ranks rendezvous through the bootstrap store on rank 0's namespace address
// and UCX is held to TCP on the veth (namespaces share /dev/shm, so without
// UCX_TLS=tcp it would use shared memory and prove nothing). Then the link
// is taken down in the middle of a stream of large operations: both sides
// must see UNAVAILABLE or DEADLINE_EXCEEDED within the op deadline and leave
// cleanly. Skips where namespaces cannot be made (not root, no netns/veth).
#include <gtest/gtest.h>

#include <string>

#include "tests/multiproc/netns_pair.h"
#include "tests/multiproc/process_group.h"

namespace tandem::testing {
namespace {

constexpr int kOpDeadlineMs = 4000;

void start(ProcessGroup& g, const NetnsPair& net, const std::string& scenario) {
  // A fresh namespace has every port free.
  const std::string port = "29517";
  for (int r = 0; r < 2; ++r) {
    const std::string& ns = r == 0 ? net.ns_a() : net.ns_b();
    std::map<std::string, std::string> env = {
        {"TANDEM_RANK", std::to_string(r)},
        {"TANDEM_WORLD_SIZE", "2"},
        {"TANDEM_MASTER_ADDR", net.addr_a()},
        {"TANDEM_MASTER_PORT", port},
        {"TANDEM_CLUSTER_TOKEN", "multiproc-netns"},
        {"TANDEM_BOOTSTRAP_TIMEOUT_MS", "15000"},
        {"TANDEM_TEST_OP_DEADLINE_MS", std::to_string(kOpDeadlineMs)},
        {"UCX_TLS", "tcp"},
        {"UCX_NET_DEVICES", r == 0 ? net.veth_a() : net.veth_b()},
        {"UCX_WARN_UNUSED_ENV_VARS", "n"},
    };
    std::vector<std::string> argv = net.exec_in(ns);
    argv.push_back(TANDEM_WORKER_PATH);
    argv.push_back(scenario);
    g.spawn(argv, env, "rank" + std::to_string(r));
  }
}

#define MAKE_NETNS_OR_SKIP(net)                                 \
  std::string why_not;                                          \
  std::unique_ptr<NetnsPair> net = NetnsPair::create(&why_not); \
  if (net == nullptr) {                                         \
    std::printf("skipping: %s\n", why_not.c_str());             \
    GTEST_SKIP() << why_not;                                    \
  }

TEST(MultiprocNetns, TwoHostsOverVethTcp) {
  std::string ns_a, ns_b;
  {
    MAKE_NETNS_OR_SKIP(net);
    ns_a = net->ns_a();
    ns_b = net->ns_b();
    ProcessGroup g(make_temp_dir());  // destroyed (children reaped) before `net`
    start(g, *net, "ucx_all");
    ASSERT_TRUE(g.wait_all(std::chrono::seconds(40))) << g.describe();
    for (int r = 0; r < 2; ++r) {
      EXPECT_TRUE(g.exited_ok(r)) << g.describe();
      EXPECT_NE(g.out(r).find("RESULT OK"), std::string::npos) << g.describe();
    }
    // UCX carried the data over TCP on the veth, not shared memory or lo.
    EXPECT_NE(g.err(0).find("to rank 1: tcp/" + net->veth_a()), std::string::npos) << g.describe();
    EXPECT_NE(g.err(1).find("to rank 0: tcp/" + net->veth_b()), std::string::npos) << g.describe();
  }
  EXPECT_FALSE(NetnsPair::namespace_exists(ns_a));
  EXPECT_FALSE(NetnsPair::namespace_exists(ns_b));
}

// Takes rank 0's end of the veth down while the ranks stream 4 MiB
// all_reduces and 4 MiB exchanges.
TEST(MultiprocNetns, LinkDownMidStreamFailsBothSides) {
  std::string ns_a, ns_b;
  {
    MAKE_NETNS_OR_SKIP(net);
    ns_a = net->ns_a();
    ns_b = net->ns_b();
    ProcessGroup g(make_temp_dir());
    start(g, *net, "ucx_stream_p2p");
    ASSERT_TRUE(g.wait_for_output(0, "PROGRESS 5", std::chrono::seconds(30))) << g.describe();
    auto down_at = std::chrono::steady_clock::now();
    std::string err;
    ASSERT_TRUE(net->run({"-n", net->ns_a(), "link", "set", net->veth_a(), "down"}, &err)) << err;
    ASSERT_TRUE(g.wait_all(std::chrono::seconds(20))) << g.describe();
    auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - down_at)
                    .count();
    std::printf("link down -> both ranks gone in %lld ms\n", static_cast<long long>(took));
    EXPECT_LT(took, kOpDeadlineMs + 6000) << g.describe();
    for (int r = 0; r < 2; ++r) {
      std::string out = g.out(r);
      EXPECT_TRUE(g.exited_with(r, kExitPeerLost)) << "rank " << r << "\n" << g.describe();
      EXPECT_TRUE(out.find("RESULT UNAVAILABLE") != std::string::npos ||
                  out.find("RESULT DEADLINE_EXCEEDED") != std::string::npos)
          << g.describe();
      long ms = detected_after_ms(out);
      EXPECT_GE(ms, 0) << g.describe();
      // From the last good iteration: up to two calls, each bounded by the op deadline.
      EXPECT_LT(ms, 2 * kOpDeadlineMs + 3000) << g.describe();
      if (ms >= 0) std::printf("rank %d: %s", r, out.substr(out.find("DETECTED")).c_str());
    }
  }
  EXPECT_FALSE(NetnsPair::namespace_exists(ns_a));
  EXPECT_FALSE(NetnsPair::namespace_exists(ns_b));
}

}  // namespace
}  // namespace tandem::testing
