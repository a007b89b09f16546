// In-process tests of the bootstrap: environment parsing, the frame format
// against hostile bytes, and the store against strangers.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <random>
#include <thread>

#include "tests/multiproc/process_group.h"
#include "transport/bootstrap/bootstrap.h"
#include "transport/bootstrap/config.h"
#include "transport/bootstrap/socket.h"
#include "transport/bootstrap/wire.h"

namespace tandem::transport {
namespace {

EnvLookup env_of(std::map<std::string, std::string> m) {
  return [m = std::move(m)](const char* name) -> const char* {
    auto it = m.find(name);
    return it == m.end() ? nullptr : it->second.c_str();
  };
}

TEST(BootstrapConfig, TorchrunStyle) {
  auto c = config_from_env(env_of({{"TANDEM_RANK", "1"},
                                   {"TANDEM_WORLD_SIZE", "4"},
                                   {"TANDEM_MASTER_ADDR", "10.0.0.1"},
                                   {"TANDEM_MASTER_PORT", "29500"},
                                   {"TANDEM_CLUSTER_TOKEN", "t"},
                                   {"TANDEM_BOOTSTRAP_TIMEOUT_MS", "1234"}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rank, 1);
  EXPECT_EQ(c->world_size, 4);
  EXPECT_EQ(c->master_addr, "10.0.0.1");
  EXPECT_EQ(c->master_port, 29500);
  EXPECT_EQ(c->token, "t");
  EXPECT_EQ(c->timeout.count(), 1234);
}

TEST(BootstrapConfig, MpirunAndPmiVariables) {
  auto c = config_from_env(env_of({{"OMPI_COMM_WORLD_RANK", "2"},
                                   {"OMPI_COMM_WORLD_SIZE", "3"},
                                   {"TANDEM_MASTER_ADDR", "h"},
                                   {"TANDEM_MASTER_PORT", "1"},
                                   {"TANDEM_CLUSTER_TOKEN", "t"}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rank, 2);
  EXPECT_EQ(c->world_size, 3);
  auto p = config_from_env(env_of({{"PMI_RANK", "0"}, {"PMI_SIZE", "1"}}));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->world_size, 1);
}

TEST(BootstrapConfig, BadValuesNameTheVariable) {
  std::map<std::string, std::string> good = {{"TANDEM_RANK", "0"},
                                             {"TANDEM_WORLD_SIZE", "2"},
                                             {"TANDEM_MASTER_ADDR", "h"},
                                             {"TANDEM_MASTER_PORT", "5"},
                                             {"TANDEM_CLUSTER_TOKEN", "t"}};
  struct Case {
    std::string var, value;
  };
  for (const Case& c : std::vector<Case>{{"TANDEM_RANK", "2"},
                                         {"TANDEM_RANK", "x"},
                                         {"TANDEM_RANK", ""},
                                         {"TANDEM_WORLD_SIZE", "0"},
                                         {"TANDEM_MASTER_PORT", "70000"},
                                         {"TANDEM_MASTER_ADDR", ""},
                                         {"TANDEM_CLUSTER_TOKEN", ""},
                                         {"TANDEM_BOOTSTRAP_TIMEOUT_MS", "-1"}}) {
    auto env = good;
    env[c.var] = c.value;
    auto s = config_from_env(env_of(env));
    ASSERT_FALSE(s.ok()) << c.var << "=" << c.value;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(s.status().message()).find(c.var), std::string::npos) << s.status();
  }
}

TEST(BootstrapConfig, TokenFilePermissions) {
  std::string dir = testing::make_temp_dir();
  std::string path = dir + "/token";
  {
    std::ofstream f(path);
    f << "file-token\n";
  }
  ::chmod(path.c_str(), 0600);
  auto t = read_token_file(path);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t, "file-token");
  ::chmod(path.c_str(), 0644);
  EXPECT_EQ(read_token_file(path).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(read_token_file(dir + "/none").status().code(), absl::StatusCode::kInvalidArgument);
  ::unlink(path.c_str());
  ::rmdir(dir.c_str());
}

TEST(BootstrapWire, HeaderRoundTripAndRejections) {
  auto h = wire::encode_header(wire::MsgType::kSet, 77);
  auto p = wire::parse_header(h, 100);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->type, wire::MsgType::kSet);
  EXPECT_EQ(p->length, 77u);
  EXPECT_FALSE(wire::parse_header(h, 76).ok());  // length over the cap, before allocation
  auto bad = h;
  bad[0] ^= 1;
  EXPECT_FALSE(wire::parse_header(bad, 100).ok());
  bad = h;
  bad[4] = 99;
  EXPECT_FALSE(wire::parse_header(bad, 100).ok());
  EXPECT_FALSE(wire::parse_header(std::span(h).subspan(0, 5), 100).ok());
}

TEST(BootstrapWire, RandomBytesNeverCrashTheParsers) {
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    std::string s(rng() % 40, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    if (i % 2 && s.size() >= 12) std::memcpy(s.data(), "TDB1", 4);
    (void)wire::parse_header({reinterpret_cast<const uint8_t*>(s.data()), s.size()},
                             wire::kMaxFramePayload);
    wire::Reader rd(s);
    (void)rd.u32();
    (void)rd.bytes(wire::kMaxKeyBytes);
    (void)rd.done();
  }
}

BootstrapConfig local_config(int rank, int world, uint16_t port) {
  BootstrapConfig c;
  c.rank = rank;
  c.world_size = world;
  c.master_addr = "127.0.0.1";
  c.master_port = port;
  c.token = "tok";
  c.timeout = std::chrono::milliseconds(5000);
  return c;
}

TEST(BootstrapStore, ThreadsAsRanks) {
  uint16_t port = testing::free_port();
  std::vector<std::string> results(3);
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r) {
    threads.emplace_back([&, r] {
      auto b = Bootstrap::create(local_config(r, 3, port));
      if (!b.ok()) {
        results[r] = b.status().ToString();
        return;
      }
      auto all =
          (*b)->all_gather("x", std::string(1000 * (r + 1), 'a' + r), (*b)->default_deadline());
      if (!all.ok()) {
        results[r] = all.status().ToString();
        return;
      }
      for (int i = 0; i < 3; ++i) {
        if ((*all)[i] != std::string(1000 * (i + 1), 'a' + i)) results[r] = "bad value";
      }
      absl::Status s = (*b)->barrier((*b)->default_deadline());
      if (!s.ok()) results[r] = s.ToString();
      auto missing = (*b)->get("never-set", BootstrapClock::now() + std::chrono::milliseconds(50));
      if (missing.status().code() != absl::StatusCode::kDeadlineExceeded) results[r] = "get";
      // Rank 0 serves the store: it leaves last.
      s = (*b)->barrier((*b)->default_deadline());
      if (!s.ok()) results[r] = s.ToString();
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 3; ++r) EXPECT_EQ(results[r], "") << "rank " << r;
}

// A rank that restarts finds the cluster it left still up (rank 0 has not
// noticed yet): the store tells it to wait, and it joins the next cluster
// that rank 0 starts on the same address.
TEST(BootstrapStore, ARestartedRankWaitsForTheNextCluster) {
  const uint16_t port = testing::free_port();
  std::unique_ptr<Bootstrap> zero, one;
  {
    std::thread t([&] { one = *Bootstrap::create(local_config(1, 2, port)); });
    auto b = Bootstrap::create(local_config(0, 2, port));
    t.join();
    ASSERT_TRUE(b.ok()) << b.status();
    ASSERT_NE(one, nullptr);
    zero = std::move(*b);
  }
  one.reset();  // rank 1 dies
  absl::StatusOr<std::unique_ptr<Bootstrap>> again = absl::UnknownError("not run");
  std::thread restarted([&] { again = Bootstrap::create(local_config(1, 2, port)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  zero.reset();  // rank 0 notices, and starts a new cluster
  auto next = Bootstrap::create(local_config(0, 2, port));
  restarted.join();
  ASSERT_TRUE(next.ok()) << next.status();
  ASSERT_TRUE(again.ok()) << again.status();
  absl::Status one_met;
  std::thread meet([&] { one_met = (*again)->barrier((*again)->default_deadline()); });
  EXPECT_TRUE((*next)->barrier((*next)->default_deadline()).ok());
  meet.join();
  EXPECT_TRUE(one_met.ok()) << one_met;
}

TEST(BootstrapStore, StrangersAreDropped) {
  uint16_t port = testing::free_port();
  std::thread stranger([port] {
    auto deadline = BootstrapClock::now() + std::chrono::seconds(5);
    // Wait until the store listens.
    absl::StatusOr<Fd> fd = absl::UnavailableError("");
    while (!fd.ok() && BootstrapClock::now() < deadline) {
      fd = tcp_connect("127.0.0.1", port, deadline);
      if (!fd.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(fd.ok());
    // A header announcing a 4 GB payload: refused before any allocation, and
    // the connection is closed.
    auto h = wire::encode_header(wire::MsgType::kSet, 0xFFFFFFFFu);
    ASSERT_TRUE(write_all(fd->get(), wire::as_view(h), deadline).ok());
    char buf[4096];
    absl::Status s;
    do {
      s = read_exact(fd->get(), buf, 1, deadline);
    } while (s.ok());
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  });
  auto b = Bootstrap::create(local_config(0, 1, port));
  ASSERT_TRUE(b.ok()) << b.status();
  stranger.join();
  EXPECT_TRUE((*b)->set("k", "v", (*b)->default_deadline()).ok());
}

}  // namespace
}  // namespace tandem::transport
