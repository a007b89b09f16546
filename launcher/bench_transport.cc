// tandem bench transport: the Communicator's ops timed over a range of sizes,
// printed the way nccl-tests prints them (size, count, type, time, algbw,
// busbw, #wrong), so a user can check a link and compare it with what they
// know. algbw = bytes / time; busbw = algbw * the op's factor (all_reduce
// 2(n-1)/n, all_gather (n-1)/n, broadcast and send_recv 1). For all_gather
// the size is the gathered total and the count is per rank, as in nccl-tests.
//
// Launch modes: threads in this process (local); processes this command
// forks itself (--local-ranks with ucx: the parent is rank 0); processes
// started by torchrun-style TANDEM_* variables or by mpirun. Every wait has a
// deadline, and a peer's failure aborts the communicator so the other ranks
// stop at once instead of waiting.
#include <arpa/inet.h>
#include <sched.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "launcher/bench_transport_data.h"
#include "launcher/commands.h"
#include "launcher/local_ranks.h"
#include "nlohmann/json.hpp"
#include "runtime/kernels/cpu/convert.h"
#include "transport/bootstrap/bootstrap.h"
#include "transport/communicator.h"
#include "transport/local/local_world.h"
#ifdef TANDEM_HAVE_UCX
#include "transport/ucx/ucx_communicator.h"
#endif
#ifdef TANDEM_HAVE_MPI
#include "transport/mpi/mpi_communicator.h"
#endif

extern char** environ;

namespace tandem::launcher {
namespace {

namespace tr = tandem::transport;
using std::chrono::milliseconds;

// Set in the environment of the ranks that --local-ranks forks, so they
// rendezvous from TANDEM_* instead of forking again.

enum class Op { kAllReduce, kAllGather, kBroadcast, kSendRecv };

struct Flags {
  std::string backend = "ucx";
  std::string op = "all_reduce";
  std::string dtype = "f32";
  std::string min_bytes = "8";
  std::string max_bytes = "256M";
  double step_factor = 2;
  int iters = 20;
  int warmup = 5;
  bool check = false;
  int local_ranks = 0;  // 0: not given
  std::string timeout = "30s";
  bool no_peer_failure_detection = false;
  bool no_pin = false;
};

// The flags, validated.
struct Config {
  std::string backend;
  Op op = Op::kAllReduce;
  std::string op_name;
  tr::DataType type = tr::DataType::kF32;
  std::string type_name;
  uint64_t min_bytes = 0, max_bytes = 0;
  double step_factor = 2;
  int iters = 0, warmup = 0;
  bool check = false, json = false;
  int local_ranks = 0;
  milliseconds timeout{0};
  bool peer_failure_detection = true;
  bool pin = true;
};

struct Row {
  uint64_t bytes = 0;
  uint64_t count = 0;
  double time_us = 0;
  double algbw = 0, busbw = 0;
  int64_t wrong = -1;  // -1: not checked
};

// "8", "64K", "256M", "1G" (binary multiples; a trailing B is allowed).
absl::StatusOr<uint64_t> parse_bytes(const std::string& flag, const std::string& text) {
  std::string s = absl::AsciiStrToUpper(text);
  if (!s.empty() && s.back() == 'B') s.pop_back();
  uint64_t scale = 1;
  if (!s.empty() && (s.back() == 'K' || s.back() == 'M' || s.back() == 'G')) {
    scale = s.back() == 'K' ? (1ull << 10) : s.back() == 'M' ? (1ull << 20) : (1ull << 30);
    s.pop_back();
  }
  uint64_t n = 0;
  if (s.empty() || !absl::SimpleAtoi(s, &n) || s[0] == '-' || s[0] == '+' || n == 0 ||
      n > (uint64_t{16} << 30) / scale) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": '", text, "' is not a size from 1 to 16G (a number with an optional K, M or G)"));
  }
  return n * scale;
}

// "30s", "500ms", "2m", or plain seconds.
absl::StatusOr<milliseconds> parse_duration(const std::string& flag, const std::string& text) {
  std::string s = text;
  double scale = 1000;
  if (s.size() > 2 && s.ends_with("ms")) {
    scale = 1, s.resize(s.size() - 2);
  } else if (s.size() > 1 && s.back() == 's') {
    s.pop_back();
  } else if (s.size() > 1 && s.back() == 'm') {
    scale = 60000, s.pop_back();
  }
  double v = 0;
  if (!absl::SimpleAtod(s, &v) || !(v > 0) || v * scale > 86400e3 || v * scale < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": '", text, "' is not a duration from 1ms to 24h (e.g. 30s, 500ms, 2m)"));
  }
  return milliseconds(static_cast<int64_t>(v * scale));
}

absl::StatusOr<Config> validate(const Flags& f, bool json) {
  Config c;
  c.backend = f.backend;
  c.op_name = f.op;
  c.type_name = f.dtype;
  static const std::map<std::string, Op> kOps = {{"all_reduce", Op::kAllReduce},
                                                 {"all_gather", Op::kAllGather},
                                                 {"broadcast", Op::kBroadcast},
                                                 {"send_recv", Op::kSendRecv}};
  static const std::map<std::string, tr::DataType> kTypes = {
      {"f32", tr::DataType::kF32}, {"f16", tr::DataType::kF16}, {"bf16", tr::DataType::kBF16}};
  // CLI11 already restricted these; the lookups cannot fail.
  c.op = kOps.at(f.op);
  c.type = kTypes.at(f.dtype);
  TANDEM_ASSIGN_OR_RETURN(c.min_bytes, parse_bytes("--min-bytes", f.min_bytes));
  TANDEM_ASSIGN_OR_RETURN(c.max_bytes, parse_bytes("--max-bytes", f.max_bytes));
  if (c.max_bytes < c.min_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-bytes (", c.max_bytes, ") is below --min-bytes (", c.min_bytes, ")"));
  }
  TANDEM_ASSIGN_OR_RETURN(c.timeout, parse_duration("--timeout", f.timeout));
  c.step_factor = f.step_factor;
  c.iters = f.iters;
  c.warmup = f.warmup;
  c.check = f.check;
  c.json = json;
  c.local_ranks = f.local_ranks;
  c.peer_failure_detection = !f.no_peer_failure_detection;
  c.pin = !f.no_pin;
  if (f.no_peer_failure_detection && c.backend != "ucx") {
    return absl::InvalidArgumentError("--no-peer-failure-detection applies to --backend ucx only");
  }
  if (c.local_ranks > 0 && c.backend != "local" && c.backend != "ucx") {
    return absl::InvalidArgumentError(
        absl::StrCat("--local-ranks works with the local and ucx backends; start ", c.backend,
                     " ranks with mpirun -np N"));
  }
  return c;
}

double bus_factor(Op op, int n) {
  switch (op) {
    case Op::kAllReduce:
      return 2.0 * (n - 1) / n;
    case Op::kAllGather:
      return static_cast<double>(n - 1) / n;
    case Op::kBroadcast:
    case Op::kSendRecv:
      return 1;
  }
  return 1;
}

// The sizes of the sweep, in bytes: min, min*f, ... up to max, each rounded
// down to whole elements (whole elements per rank for all_gather), at least
// one, without repeats. The same on every rank.
std::vector<uint64_t> sweep(const Config& c, int n) {
  const uint64_t unit = tr::dtype_size(c.type) * (c.op == Op::kAllGather ? n : 1);
  std::vector<uint64_t> sizes;
  for (double s = static_cast<double>(c.min_bytes);
       s <= static_cast<double>(c.max_bytes) * 1.000001; s *= c.step_factor) {
    const uint64_t b = std::max<uint64_t>(unit, static_cast<uint64_t>(s) / unit * unit);
    if (sizes.empty() || sizes.back() != b) sizes.push_back(b);
  }
  return sizes;
}

// What each rank reports for one size; swapped as raw bytes.
struct RankResult {
  double median_us = 0;
  uint64_t wrong = 0;
};
static_assert(sizeof(RankResult) == 16);

class RankBench {
 public:
  RankBench(tr::Communicator& comm, const Config& c)
      : comm_(comm), c_(c), n_(comm.size()), rank_(comm.rank()), elt_(tr::dtype_size(c.type)) {}

  // Runs the sweep; on rank 0 calls on_row for each size as it completes.
  absl::Status run(const std::function<void(const Row&)>& on_row) {
    const std::vector<uint64_t> sizes = sweep(c_, n_);
    const uint64_t max_bytes = sizes.back();
    // Buffers for the largest size, allocated once.
    switch (c_.op) {
      case Op::kAllReduce:
        src_.resize(max_bytes);
        work_.resize(max_bytes);
        break;
      case Op::kAllGather:
        src_.resize(max_bytes / n_);
        work_.resize(max_bytes);
        break;
      case Op::kBroadcast:
        work_.resize(max_bytes);
        break;
      case Op::kSendRecv:
        src_.resize(max_bytes);
        work_.resize(max_bytes);
        break;
    }
    const int seeded_rank = c_.op == Op::kBroadcast ? 0 : rank_;
    std::byte* seeded = c_.op == Op::kBroadcast ? work_.data() : src_.data();
    fill(seeded, (c_.op == Op::kBroadcast ? work_.size() : src_.size()) / elt_, c_.type,
         seeded_rank);
    times_.resize(c_.iters);
    std::vector<RankResult> all(n_);
    for (uint64_t bytes : sizes) {
      TANDEM_ASSIGN_OR_RETURN(RankResult mine, run_size(bytes));
      TANDEM_RETURN_IF_ERROR(
          comm_.all_gather(&mine, all.data(), sizeof(RankResult), tr::DataType::kU8, deadline()));
      if (rank_ != 0) continue;
      Row row;
      row.bytes = bytes;
      row.count = c_.op == Op::kAllGather ? bytes / elt_ / n_ : bytes / elt_;
      row.wrong = c_.check ? 0 : -1;
      for (const RankResult& r : all) {
        row.time_us = std::max(row.time_us, r.median_us);
        if (c_.check) row.wrong += static_cast<int64_t>(r.wrong);
      }
      row.algbw = static_cast<double>(bytes) / std::max(row.time_us, 1e-3) / 1e3;
      row.busbw = row.algbw * bus_factor(c_.op, n_);
      on_row(row);
    }
    return absl::OkStatus();
  }

 private:
  tr::Deadline deadline() const { return tr::deadline_in(c_.timeout); }

  // Restores what the previous iteration overwrote (untimed); before the
  // checked (last) iteration also poisons the receive side, so stale data
  // from an earlier iteration cannot pass the check.
  void prepare(uint64_t bytes, bool last) {
    const bool poison = last && c_.check;
    switch (c_.op) {
      case Op::kAllReduce:
        std::memcpy(work_.data(), src_.data(), bytes);
        break;
      case Op::kBroadcast:
        if (poison && rank_ != 0) std::memset(work_.data(), 0xff, bytes);
        break;
      case Op::kAllGather:
      case Op::kSendRecv:
        if (poison) std::memset(work_.data(), 0xff, bytes);
        break;
    }
  }

  absl::Status run_op(uint64_t bytes) {
    switch (c_.op) {
      case Op::kAllReduce:
        return comm_.all_reduce(work_.data(), bytes / elt_, c_.type, tr::ReduceOp::kSum,
                                deadline());
      case Op::kAllGather:
        return comm_.all_gather(src_.data(), work_.data(), bytes / elt_ / n_, c_.type, deadline());
      case Op::kBroadcast:
        return comm_.broadcast(work_.data(), bytes, 0, deadline());
      case Op::kSendRecv: {
        // Every rank sends to the next and receives from the previous, as
        // nccl-tests' sendrecv does.
        const int next = (rank_ + 1) % n_, prev = (rank_ + n_ - 1) % n_;
        TANDEM_ASSIGN_OR_RETURN(auto recv, comm_.irecv(work_.data(), bytes, prev, 0));
        TANDEM_ASSIGN_OR_RETURN(auto send, comm_.isend(src_.data(), bytes, next, 0));
        const tr::Deadline d = deadline();
        TANDEM_RETURN_IF_ERROR(recv->wait(d));
        return send->wait(d);
      }
    }
    return absl::InternalError("unknown op");
  }

  uint64_t count_wrong(uint64_t bytes) const {
    switch (c_.op) {
      case Op::kAllReduce:
        return count_wrong_sums(work_.data(), bytes / elt_, c_.type, n_);
      case Op::kBroadcast:
        return count_mismatches(work_.data(), bytes / elt_, c_.type, 0);
      case Op::kAllGather: {
        const uint64_t per_rank = bytes / n_;
        uint64_t wrong = 0;
        for (int r = 0; r < n_; ++r) {
          wrong += count_mismatches(work_.data() + r * per_rank, per_rank / elt_, c_.type, r);
        }
        return wrong;
      }
      case Op::kSendRecv:
        return count_mismatches(work_.data(), bytes / elt_, c_.type, (rank_ + n_ - 1) % n_);
    }
    return 0;
  }

  absl::StatusOr<RankResult> run_size(uint64_t bytes) {
    const std::string what = absl::StrCat(c_.op_name, " of ", bytes, " B: ");
    TANDEM_RETURN_IF_ERROR(comm_.barrier(deadline()));
    const int total = c_.warmup + c_.iters;
    for (int it = 0; it < total; ++it) {
      prepare(bytes, it == total - 1);
      // Untimed: without it a root whose sends complete eagerly runs ahead,
      // and the receivers then time data that was already there.
      if (it > 0) TANDEM_RETURN_IF_ERROR(comm_.barrier(deadline()));
      const auto start = tr::Clock::now();
      absl::Status s = run_op(bytes);
      const auto end = tr::Clock::now();
      if (!s.ok()) return absl::Status(s.code(), absl::StrCat(what, s.message()));
      if (it >= c_.warmup) {
        times_[it - c_.warmup] = std::chrono::duration<double, std::micro>(end - start).count();
      }
    }
    RankResult r;
    std::nth_element(times_.begin(), times_.begin() + c_.iters / 2, times_.end());
    r.median_us = times_[c_.iters / 2];
    if (c_.check) r.wrong = count_wrong(bytes);
    return r;
  }

  tr::Communicator& comm_;
  const Config& c_;
  const int n_, rank_;
  const size_t elt_;
  std::vector<std::byte> src_, work_;
  std::vector<double> times_;
};

// Rank 0's output: the table (streamed row by row) or the JSON array.
class Printer {
 public:
  Printer(const Config& c, int n) : c_(c), n_(n) {}

  void header() {
    if (c_.json) return;
    std::printf(
        "# tandem bench transport: %s, backend %s, %d ranks, %d iterations after %d "
        "warm-up; time = median over iterations, max over ranks\n",
        c_.op_name.c_str(), c_.backend.c_str(), n_, c_.iters, c_.warmup);
    std::printf("# %10s  %12s  %6s  %10s  %8s  %8s  %7s\n", "size", "count", "type", "time",
                "algbw", "busbw", "#wrong");
    std::printf("# %10s  %12s  %6s  %10s  %8s  %8s  %7s\n", "(B)", "(elements)", "", "(us)",
                "(GB/s)", "(GB/s)", "");
    std::fflush(stdout);
  }

  void row(const Row& r) {
    rows_.push_back(r);
    if (c_.json) return;
    const std::string wrong = r.wrong < 0 ? "N/A" : std::to_string(r.wrong);
    std::printf("  %10llu  %12llu  %6s  %10.2f  %8.3f  %8.3f  %7s\n",
                static_cast<unsigned long long>(r.bytes), static_cast<unsigned long long>(r.count),
                c_.type_name.c_str(), r.time_us, r.algbw, r.busbw, wrong.c_str());
    std::fflush(stdout);
  }

  void footer() {
    double busbw = 0;
    for (const Row& r : rows_) busbw += r.busbw;
    if (!rows_.empty()) busbw /= static_cast<double>(rows_.size());
    if (!c_.json) {
      std::printf("# Avg bus bandwidth    : %.3f GB/s\n", busbw);
      return;
    }
    nlohmann::json out = nlohmann::json::array();
    for (const Row& r : rows_) {
      out.push_back({{"op", c_.op_name},
                     {"backend", c_.backend},
                     {"ranks", n_},
                     {"type", c_.type_name},
                     {"size_bytes", r.bytes},
                     {"count", r.count},
                     {"time_us", r.time_us},
                     {"algbw_gb_per_s", r.algbw},
                     {"busbw_gb_per_s", r.busbw},
                     {"wrong", r.wrong < 0 ? nlohmann::json(nullptr) : nlohmann::json(r.wrong)}});
    }
    std::printf("%s\n", out.dump(2).c_str());
  }

  int64_t total_wrong() const {
    int64_t w = 0;
    for (const Row& r : rows_) w += std::max<int64_t>(r.wrong, 0);
    return w;
  }

 private:
  const Config& c_;
  const int n_;
  std::vector<Row> rows_;
};

// The stderr line that opens every run: backend, world size and which host
// holds which ranks (gathered over the communicator itself, a first link
// check).
absl::Status log_world(tr::Communicator& comm, const Config& c, const std::string& launch) {
  std::array<char, 64> mine{};
  ::gethostname(mine.data(), mine.size() - 1);
  std::vector<char> all(mine.size() * comm.size());
  TANDEM_RETURN_IF_ERROR(comm.all_gather(mine.data(), all.data(), mine.size(), tr::DataType::kU8,
                                         tr::deadline_in(c.timeout)));
  if (comm.rank() != 0) return absl::OkStatus();
  std::map<std::string, std::vector<int>> hosts;
  for (int r = 0; r < comm.size(); ++r) {
    hosts[std::string(all.data() + r * mine.size(), strnlen(all.data() + r * mine.size(), 63))]
        .push_back(r);
  }
  std::vector<std::string> parts;
  for (const auto& [host, ranks] : hosts) {
    parts.push_back(absl::StrCat(host, " (ranks ", absl::StrJoin(ranks, ","), ")"));
  }
  std::fprintf(stderr, "tandem bench transport: backend %s, world size %d, %s, hosts: %s\n",
               c.backend.c_str(), comm.size(), launch.c_str(), absl::StrJoin(parts, "; ").c_str());
  return absl::OkStatus();
}

// One rank's whole run. On failure the communicator is aborted, so the peers
// stop at once rather than at their deadline. Rank 0 prints.
absl::Status run_on(tr::Communicator& comm, const Config& c, const std::string& launch) {
  Printer printer(c, comm.size());
  absl::Status s = log_world(comm, c, launch);
  if (s.ok()) {
    if (comm.rank() == 0) printer.header();
    RankBench bench(comm, c);
    s = bench.run([&](const Row& r) { printer.row(r); });
  }
  if (!s.ok()) {
    comm.abort(s);
    return s;
  }
  if (comm.rank() == 0) {
    printer.footer();
    if (printer.total_wrong() > 0) {
      return absl::DataLossError(absl::StrCat(printer.total_wrong(), " wrong values in ", c.op_name,
                                              " (see the #wrong column)"));
    }
  }
  return absl::OkStatus();
}

absl::Status with_rank(int rank, int n, const absl::Status& s) {
  if (n <= 1 || s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("rank ", rank, ": ", s.message()));
}

// --backend local: n threads, one communicator each. The first failure is
// the cause; the others are its echo (ABORTED, UNAVAILABLE).
absl::Status run_local(const Config& c) {
  const int n = std::max(1, c.local_ranks);
  auto world = tr::make_local_world(n);
  std::mutex mu;
  std::optional<absl::Status> first;
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      absl::Status s = run_on(*world[r], c, "threads in one process");
      if (s.ok()) return;
      std::lock_guard<std::mutex> lock(mu);
      if (!first) first = with_rank(r, n, s);
    });
  }
  for (auto& t : threads) t.join();
  return first.value_or(absl::OkStatus());
}

// The process's own argv, to re-exec it for the other local ranks.


#ifdef TANDEM_HAVE_UCX
// --local-ranks: rank r on the r-th CPU this process may use, when there are
// enough of them. Busy-polling ranks that the scheduler puts on one core, or
// moves between cores, measured 2.5x the latency of pinned ones (a 32 KiB
// exchange over shared memory, 24 us against 9.5).
void pin_local_rank(int rank, int n_ranks) {
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0 || CPU_COUNT(&allowed) < n_ranks) {
    return;
  }
  int seen = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed) || seen++ != rank) continue;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (sched_setaffinity(0, sizeof(one), &one) == 0 && rank == 0) {
      std::fprintf(stderr,
                   "tandem bench transport: rank r runs on the r-th allowed CPU (--no-pin: off)\n");
    }
    return;
  }
}

// Rendezvous, the UCX communicator, the run and a closing store barrier (so
// no rank tears down its endpoints while a peer still reads from them).
absl::Status run_ucx_rank(const tr::BootstrapConfig& config, const Config& c,
                          const std::string& launch, LocalRanks* children) {
  if (c.local_ranks > 0 && c.pin) pin_local_rank(config.rank, config.world_size);
  TANDEM_ASSIGN_OR_RETURN(auto boot, tr::Bootstrap::create(config));
  tr::UcxOptions options;
  options.setup_timeout = c.timeout;
  options.peer_failure_detection = c.peer_failure_detection;
  TANDEM_ASSIGN_OR_RETURN(auto comm, tr::make_ucx_communicator(*boot, options));
  if (children != nullptr) children->set_comm(comm.get());
  absl::Status s = run_on(*comm, c, launch);
  if (s.ok()) s = boot->barrier(boot->default_deadline());
  if (children != nullptr) children->set_comm(nullptr);
  return s;
}

absl::Status run_ucx(const Config& c) {
  const bool child = started_as_local_rank();
  if (c.local_ranks == 0 || child) {
    // Started by torchrun-style TANDEM_* or by mpirun (rank and size from
    // its environment, the rendezvous from TANDEM_MASTER_*).
    TANDEM_ASSIGN_OR_RETURN(tr::BootstrapConfig config, tr::config_from_env());
    config.timeout = c.timeout;
    const std::string launch = child ? "forked by --local-ranks" : "ranks from the environment";
    return with_rank(config.rank, config.world_size, run_ucx_rank(config, c, launch, nullptr));
  }
  tr::BootstrapConfig config;
  config.rank = 0;
  config.world_size = c.local_ranks;
  config.master_addr = "127.0.0.1";
  TANDEM_ASSIGN_OR_RETURN(config.master_port, free_port());
  config.token = random_token();
  config.timeout = c.timeout;
  LocalRanks children;
  if (c.local_ranks > 1) {
    TANDEM_RETURN_IF_ERROR(children.spawn(
        c.local_ranks, {{"TANDEM_WORLD_SIZE", std::to_string(c.local_ranks)},
                        {"TANDEM_MASTER_ADDR", "127.0.0.1"},
                        {"TANDEM_MASTER_PORT", std::to_string(config.master_port)},
                        {"TANDEM_CLUSTER_TOKEN", config.token},
                        {"TANDEM_BOOTSTRAP_TIMEOUT_MS", std::to_string(c.timeout.count())}}));
  }
  absl::Status s = run_ucx_rank(config, c, "processes forked on this box", &children);
  if (!s.ok()) {
    // A child's death is the cause; rank 0's own error is then its echo.
    if (auto f = children.failure()) return *f;
    return with_rank(0, c.local_ranks, s);
  }
  return children.wait_all(tr::deadline_in(c.timeout));
}
#endif

absl::Status run_transport_status(const Config& c) {
  if (c.backend == "local") return run_local(c);
  if (c.backend == "ucx") {
#ifdef TANDEM_HAVE_UCX
    return run_ucx(c);
#else
    return absl::UnimplementedError("the ucx backend is not built into this binary");
#endif
  }
  if (c.backend == "mpi") {
#ifdef TANDEM_HAVE_MPI
    if (!tr::launched_by_mpirun()) {
      std::fprintf(stderr, "tandem bench transport: not started by mpirun: one rank\n");
    }
    TANDEM_ASSIGN_OR_RETURN(auto comm, tr::make_mpi_communicator());
    return with_rank(comm->rank(), comm->size(), run_on(*comm, c, "started by mpirun"));
#else
    return absl::UnimplementedError(
        "the mpi backend is not built into this binary (no MPI found at build time)");
#endif
  }
  // NCCL takes device pointers: this bench's buffers and checks are host
  // memory, so it cannot drive that backend yet.
  return absl::UnimplementedError(
      "bench transport does not drive the nccl backend yet (it needs GPU buffers)");
}

int run_transport(const Config& c) {
  absl::Status s = run_transport_status(c);
  return s.ok() ? 0 : report_error("bench", s);
}

}  // namespace

BenchTransportHooks add_bench_transport_options(CLI::App& bench) {
  auto f = std::make_shared<Flags>();
  std::vector<CLI::Option*> options = {
      bench.add_option("--backend", f->backend, "transport: ucx | mpi | nccl | local")
          ->check(CLI::IsMember({"ucx", "mpi", "nccl", "local"})),
      bench.add_option("--op", f->op, "transport: all_reduce | all_gather | broadcast | send_recv")
          ->check(CLI::IsMember({"all_reduce", "all_gather", "broadcast", "send_recv"})),
      bench.add_option("--dtype", f->dtype, "transport: f32 | bf16 | f16")
          ->check(CLI::IsMember({"f32", "bf16", "f16"})),
      bench.add_option("--min-bytes", f->min_bytes, "transport: smallest size, e.g. 8, 64K"),
      bench.add_option("--max-bytes", f->max_bytes, "transport: largest size, e.g. 256M, 1G"),
      bench.add_option("--step-factor", f->step_factor, "transport: size multiplier per row")
          ->check(CLI::Range(1.001, 1024.0)),
      bench.add_option("--iters", f->iters, "transport: timed iterations per size")
          ->check(CLI::Range(1, 1000000)),
      bench.add_option("--warmup", f->warmup, "transport: untimed iterations per size")
          ->check(CLI::Range(0, 1000000)),
      bench.add_flag("--check", f->check, "transport: verify results against seeded data"),
      bench
          .add_option("--local-ranks", f->local_ranks,
                      "transport: run N ranks on this box (threads for local, processes for ucx)")
          ->check(CLI::Range(1, 256)),
      bench.add_option("--timeout", f->timeout, "transport: deadline of every wait, e.g. 30s"),
      bench.add_flag("--no-peer-failure-detection", f->no_peer_failure_detection,
                     "transport: ucx without UCP_ERR_HANDLING_MODE_PEER, so shared memory can be "
                     "used (a dead peer then shows as a timeout)"),
      bench.add_flag("--no-pin", f->no_pin,
                     "transport: with --local-ranks, leave the ranks unpinned (by default rank r "
                     "runs on the r-th allowed CPU when there are enough)"),
  };
  BenchTransportHooks hooks;
  hooks.any_flag_given = [options] {
    return std::any_of(options.begin(), options.end(),
                       [](const CLI::Option* o) { return o->count() > 0; });
  };
  hooks.run = [f](bool json) {
    auto c = validate(*f, json);
    if (!c.ok()) return report_error("bench", c.status());
    return run_transport(*c);
  };
  return hooks;
}

}  // namespace tandem::launcher
