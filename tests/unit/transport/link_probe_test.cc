// The start-up link probe over the in-process transport (threads): every rank
// returns rank 0's verdict, a silent peer is a deadline, not a hang; and the
// advice on what UCX picked, against a made-up sysfs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
#include "transport/link_advice.h"
#include "transport/link_probe.h"
#include "transport/local/local_world.h"

namespace tandem::transport {
namespace {

using std::chrono::milliseconds;

LinkProbeOptions quick() {
  LinkProbeOptions o;
  o.budget = milliseconds(20);
  o.large_bytes = 256 << 10;
  o.timeout = milliseconds(2000);
  return o;
}

// Runs probe_links on every rank of a local world; rank 0's result first.
std::vector<absl::StatusOr<std::vector<LinkMeasurement>>> probe_all(
    int n, const LinkProbeOptions& o, const LinkJudge& judge = nullptr, bool measure = true) {
  auto world = make_local_world(n);
  std::vector<std::future<absl::StatusOr<std::vector<LinkMeasurement>>>> futures;
  for (auto& comm : world) {
    futures.push_back(std::async(std::launch::async, [&, c = comm.get()] {
      return probe_links(*c, o, judge, measure);
    }));
  }
  std::vector<absl::StatusOr<std::vector<LinkMeasurement>>> out;
  for (auto& f : futures) out.push_back(f.get());
  return out;
}

TEST(LinkProbe, RankZeroMeasuresEveryPeer) {
  auto results = probe_all(3, quick());
  ASSERT_TRUE(results[0].ok()) << results[0].status();
  ASSERT_EQ(results[0]->size(), 2u);
  for (int p = 1; p <= 2; ++p) {
    const LinkMeasurement& m = (*results[0])[p - 1];
    EXPECT_EQ(m.rank_a, 0);
    EXPECT_EQ(m.rank_b, p);
    EXPECT_EQ(m.backend, "local");
    EXPECT_GE(m.round_trips, 5);
    EXPECT_GT(m.round_trip_us, 0);
    EXPECT_GE(m.large_messages, 1);
    EXPECT_GT(m.bandwidth_gbps, 0);
    EXPECT_NE(describe_link(m).find(absl::StrCat("link rank 0 <-> ", p, ": local, 8 KiB round trip")),
              std::string::npos)
        << describe_link(m);
    ASSERT_TRUE(results[p].ok()) << results[p].status();
    EXPECT_TRUE(results[p]->empty());
  }
}

TEST(LinkProbe, EveryRankReturnsTheVerdict) {
  auto refuse = [](const std::vector<LinkMeasurement>& links) {
    return absl::FailedPreconditionError(absl::StrCat("refused ", links.size(), " links"));
  };
  for (const auto& r : probe_all(3, quick(), refuse)) {
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
    EXPECT_EQ(r.status().message(), "refused 2 links");
  }
}

TEST(LinkProbe, SkippedOnRankZeroLetsEveryRankGoOn) {
  for (const auto& r : probe_all(2, quick(), nullptr, /*measure=*/false)) {
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r->empty());
  }
}

TEST(LinkProbe, SilentPeerIsADeadlineNotAHang) {
  auto world = make_local_world(2);  // rank 1 never takes part
  LinkProbeOptions o = quick();
  o.timeout = milliseconds(200);
  const auto start = Clock::now();
  auto r = probe_links(*world[0], o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_NE(r.status().message().find("rank 0 <-> 1"), std::string::npos) << r.status();
  EXPECT_LT(Clock::now() - start, milliseconds(3000));
}

TEST(LinkProbe, AbortedPeerFailsRankZero) {
  auto world = make_local_world(2);
  world[1]->abort(absl::UnavailableError("gone"));
  LinkProbeOptions o = quick();
  o.timeout = milliseconds(300);
  auto zero = std::async(std::launch::async, [&] { return probe_links(*world[0], o); });
  auto one = probe_links(*world[1], o);
  EXPECT_FALSE(one.ok());
  EXPECT_FALSE(zero.get().ok());
}

TEST(LinkAdvice, KindsAndDevices) {
  EXPECT_EQ(link_kind("tcp/lo"), LinkKind::kTcp);
  EXPECT_EQ(link_kind("rc_mlx5/mlx5_0:1 tcp/eth0"), LinkKind::kRdma);
  EXPECT_EQ(link_kind("ud_verbs/mlx5_1:1"), LinkKind::kRdma);
  EXPECT_EQ(link_kind("posix/memory cma/memory"), LinkKind::kSharedMemory);
  EXPECT_EQ(link_kind(""), LinkKind::kUnknown);
  EXPECT_EQ(network_device("tcp/eth0"), "eth0");
  EXPECT_EQ(network_device("tcp/eth0 rc_mlx5/mlx5_0:1"), "mlx5_0:1");
  EXPECT_EQ(network_device("posix/memory"), "");
}

class FakeSysfs : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = std::filesystem::temp_directory_path() /
            ("tandem-sysfs-" + std::to_string(::getpid()));
    std::filesystem::remove_all(root_);
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  void write(const std::string& path, const std::string& text) {
    std::filesystem::create_directories((root_ / path).parent_path());
    std::ofstream(root_ / path) << text << "\n";
  }
  std::filesystem::path root_;
};

TEST_F(FakeSysfs, TcpBesideRdmaAndTheSlowPortAreWarned) {
  write("class/infiniband/mlx5_0/ports/1/rate", "200 Gb/sec (4X HDR)");
  write("class/net/eth0/speed", "1000");
  write("class/net/enp1s0f0np0/speed", "200000");
  write("class/net/lo/speed", "");
  const LinkEnvironment env = read_link_environment(root_.string());
  EXPECT_EQ(env.rdma_devices, std::vector<std::string>{"mlx5_0"});
  EXPECT_EQ(env.interface_mbps.size(), 2u);
  EXPECT_DOUBLE_EQ(env.rdma_port_gbps.at("mlx5_0:1"), 200);

  LinkMeasurement m;
  m.rank_b = 1;
  m.backend = "ucx";
  m.path = "tcp/eth0";
  m.bandwidth_gbps = 0.11;
  const std::vector<std::string> w = link_warnings(m, env);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_NE(w[0].find("runs over TCP (tcp/eth0) although this box has RDMA devices (mlx5_0)"),
            std::string::npos) << w[0];
  EXPECT_NE(w[1].find("a 1000 Mb/s interface"), std::string::npos) << w[1];
  EXPECT_NE(w[1].find("UCX_NET_DEVICES"), std::string::npos) << w[1];
  EXPECT_NE(w[1].find("enp1s0f0np0 (200 Gb/s)"), std::string::npos) << w[1];

  // RDMA at a tenth of the port's speed.
  m.path = "rc_mlx5/mlx5_0:1";
  m.bandwidth_gbps = 2.5;
  const std::vector<std::string> slow = link_warnings(m, env);
  ASSERT_EQ(slow.size(), 1u);
  EXPECT_NE(slow[0].find("measured 2.50 GB/s, under a fifth of mlx5_0:1's 200 Gb/s"),
            std::string::npos) << slow[0];
  m.bandwidth_gbps = 20;
  EXPECT_TRUE(link_warnings(m, env).empty());
}

TEST_F(FakeSysfs, LoopbackWithoutRdmaIsQuiet) {
  write("class/net/lo/speed", "");
  const LinkEnvironment env = read_link_environment(root_.string());
  LinkMeasurement m;
  m.rank_b = 1;
  m.backend = "ucx";
  m.path = "tcp/lo";
  m.bandwidth_gbps = 1;
  EXPECT_TRUE(link_warnings(m, env).empty());
}

}  // namespace
}  // namespace tandem::transport
