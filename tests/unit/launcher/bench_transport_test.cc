// `tandem bench transport` as a user runs it: the real binary, real
// processes. Every op over the local backend with 3 ranks and --check, UCX
// over TCP loopback with 2 forked ranks, the JSON output, bad flags, and a
// rendezvous that never completes (bounded by --timeout).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/launcher/run_tandem.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

namespace fs = std::filesystem;

using Result = testing::RunResult;
using testing::count_lines;

Result tandem(const std::string& args, const std::string& env = "") {
  return testing::run_tandem(args, env);
}

struct TableRow {
  uint64_t bytes = 0, count = 0;
  std::string type;
  double time_us = 0, algbw = 0, busbw = 0;
  std::string wrong;
};

// The table's data rows (every line that is not a # comment).
std::vector<TableRow> parse_table(const std::string& out) {
  std::vector<TableRow> rows;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line.find('#') != std::string::npos) continue;
    std::istringstream fields(line);
    TableRow r;
    fields >> r.bytes >> r.count >> r.type >> r.time_us >> r.algbw >> r.busbw >> r.wrong;
    if (fields) rows.push_back(r);
  }
  return rows;
}

constexpr char kSweep[] = " --min-bytes 8 --max-bytes 1M --iters 3 --warmup 1";

TEST(BenchTransport, LocalEveryOpChecksClean) {
  for (const std::string op : {"all_reduce", "all_gather", "broadcast", "send_recv"}) {
    const Result r =
        tandem("bench transport --backend local --local-ranks 3 --check --op " + op + kSweep);
    ASSERT_EQ(r.code, 0) << op << ": " << r.err;
    const std::vector<TableRow> rows = parse_table(r.out);
    // 8, 16, ..., 1M; all_gather rounds each size to whole f32s per rank, so
    // 8 and 16 both become 12 and make one row.
    EXPECT_EQ(rows.size(), op == "all_gather" ? 17u : 18u) << op << ":\n" << r.out;
    for (const TableRow& row : rows) {
      EXPECT_EQ(row.wrong, "0") << op << " " << row.bytes;
      EXPECT_EQ(row.type, "f32");
      EXPECT_GT(row.time_us, 0);
      EXPECT_LE(row.bytes, 1u << 20);
      if (op == "all_gather") {
        EXPECT_EQ(row.bytes, row.count * 4 * 3);  // count is per rank
      } else {
        EXPECT_EQ(row.bytes, row.count * 4);
      }
    }
    EXPECT_NE(r.err.find("backend local, world size 3"), std::string::npos) << r.err;
  }
}

TEST(BenchTransport, LocalHalfPrecisionSums) {
  for (const std::string type : {"f16", "bf16"}) {
    const Result r = tandem("bench transport --backend local --local-ranks 3 --check --dtype " +
                            type + " --min-bytes 2 --max-bytes 256K --step-factor 8 --iters 2");
    ASSERT_EQ(r.code, 0) << type << ": " << r.err;
    const std::vector<TableRow> rows = parse_table(r.out);
    ASSERT_FALSE(rows.empty()) << r.out;
    for (const TableRow& row : rows) {
      EXPECT_EQ(row.wrong, "0") << type << " " << row.bytes;
      EXPECT_EQ(row.type, type);
    }
  }
}

TEST(BenchTransport, JsonParses) {
  const Result r = tandem(std::string("bench transport --backend local --local-ranks 2 --check "
                                      "--op all_gather --json") +
                          kSweep);
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json rows = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(rows.is_array()) << r.out;
  ASSERT_EQ(rows.size(), 18u);
  for (const auto& row : rows) {
    EXPECT_EQ(row["op"], "all_gather");
    EXPECT_EQ(row["ranks"], 2);
    EXPECT_EQ(row["wrong"], 0);
    // all_gather: busbw = algbw * (n-1)/n.
    EXPECT_NEAR(row["busbw_gb_per_s"].get<double>(), row["algbw_gb_per_s"].get<double>() / 2,
                1e-12);
  }
  // Without --check the column is null.
  const Result unchecked =
      tandem(std::string("bench transport --backend local --local-ranks 2 --json") + kSweep);
  ASSERT_EQ(unchecked.code, 0) << unchecked.err;
  EXPECT_TRUE(nlohmann::json::parse(unchecked.out)[0]["wrong"].is_null());
}

constexpr char kUcxEnv[] = "UCX_TLS=tcp UCX_NET_DEVICES=lo UCX_WARN_UNUSED_ENV_VARS=n";

TEST(BenchTransport, UcxForkedRanksCheckClean) {
  for (const std::string op : {"all_reduce", "send_recv"}) {
    const Result r = tandem(
        "bench transport --backend ucx --local-ranks 2 --check --timeout 20s "
        "--op " +
            op + kSweep,
        kUcxEnv);
    ASSERT_EQ(r.code, 0) << op << ": " << r.err;
    const std::vector<TableRow> rows = parse_table(r.out);
    EXPECT_EQ(rows.size(), 18u) << r.out;
    for (const TableRow& row : rows) EXPECT_EQ(row.wrong, "0") << op << " " << row.bytes;
    // The link check: world, hosts, and the transports UCX picked per rank.
    EXPECT_NE(r.err.find("backend ucx, world size 2"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("tandem/ucx: rank 0: UCX_TLS=tcp"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("tandem/ucx: rank 1: UCX_TLS=tcp"), std::string::npos) << r.err;
  }
}

TEST(BenchTransport, MissingPeerEndsAtTheDeadline) {
  // Rank 0 of 2 from the environment, and no rank 1: the rendezvous names it.
  const Result r = tandem("bench transport --backend ucx --timeout 1s",
                          std::string(kUcxEnv) +
                              " TANDEM_RANK=0 TANDEM_WORLD_SIZE=2 TANDEM_MASTER_ADDR=127.0.0.1 "
                              "TANDEM_MASTER_PORT=0 TANDEM_CLUSTER_TOKEN=t");
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("1"), std::string::npos) << r.err;
}

TEST(BenchTransport, BadFlagsGiveOneLineAndExitCode2) {
  for (const std::string args :
       {"bench transport --backend carrier-pigeon", "bench transport --op all_to_all",
        "bench transport --dtype i8", "bench transport --min-bytes 12X",
        "bench transport --max-bytes 0", "bench transport --min-bytes 1M --max-bytes 1K",
        "bench transport --max-bytes 1T", "bench transport --iters 0",
        "bench transport --step-factor 1", "bench transport --timeout soon",
        "bench transport --timeout 0s", "bench transport --local-ranks 0",
        "bench transport --backend mpi --local-ranks 2", "bench transport --model m.gguf",
        "bench decode --model m.gguf --op all_reduce", "bench decode", "bench frobnicate",
        "bench transport --backend nccl",
        "bench transport --backend local --no-peer-failure-detection"}) {
    const Result r = tandem(args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.err;
    EXPECT_EQ(count_lines(r.err), 1) << args << ": " << r.err;
    EXPECT_TRUE(r.out.empty()) << args << ": " << r.out;
  }
}

}  // namespace
}  // namespace tandem
