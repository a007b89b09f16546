#include "tests/multiproc/ucx_scenarios.h"
#include "tests/support/allocation_counter.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "transport/link_probe.h"
#include "transport/ucx/ucx_communicator.h"

namespace tandem::transport {
namespace {

using std::chrono::milliseconds;

uint8_t pattern(int from, int to, size_t i, uint32_t tag) {
  return static_cast<uint8_t>(from * 31 + to * 7 + i * 13 + tag);
}

absl::Status expect_code(const absl::Status& s, absl::StatusCode code, const std::string& what) {
  if (s.code() != code) {
    return absl::InternalError(
        absl::StrCat(what, ": expected ", absl::StatusCodeToString(code), ", got ", s.ToString()));
  }
  return absl::OkStatus();
}

// Every rank sends every size to every rank (itself included) and checks
// what it receives; then the error paths.
absl::Status p2p(Communicator& comm) {
  const int n = comm.size(), me = comm.rank();
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{8}, size_t{4096}, size_t{(1 << 20) + 3}}) {
    for (uint32_t tag : {0u, 5u, kMaxUserTag - 1}) {
      std::vector<std::vector<uint8_t>> out(n), in(n);
      std::vector<std::unique_ptr<Request>> reqs;
      for (int p = 0; p < n; ++p) {
        in[p].assign(bytes, 0);
        out[p].resize(bytes);
        for (size_t i = 0; i < bytes; ++i) out[p][i] = pattern(me, p, i, tag);
        TANDEM_ASSIGN_OR_RETURN(auto r, comm.irecv(in[p].data(), bytes, p, tag));
        reqs.push_back(std::move(r));
      }
      for (int p = 0; p < n; ++p) {
        TANDEM_ASSIGN_OR_RETURN(auto s, comm.isend(out[p].data(), bytes, p, tag));
        reqs.push_back(std::move(s));
      }
      for (auto& r : reqs) TANDEM_RETURN_IF_ERROR(r->wait(deadline_in(milliseconds(10000))));
      for (int p = 0; p < n; ++p) {
        for (size_t i = 0; i < bytes; ++i) {
          if (in[p][i] != pattern(p, me, i, tag)) {
            return absl::InternalError(
                absl::StrCat("bad byte ", i, " of ", bytes, " from rank ", p, " tag ", tag));
          }
        }
      }
    }
  }
  // Same pair, same tag: in order.
  int next = (me + 1) % n, prev = (me + n - 1) % n;
  for (uint32_t i = 0; i < 50; ++i) {
    TANDEM_ASSIGN_OR_RETURN(auto s, comm.isend(&i, 4, next, 9));
    uint32_t got = 0;
    TANDEM_RETURN_IF_ERROR(comm.recv(&got, 4, prev, 9, deadline_in(milliseconds(5000))));
    TANDEM_RETURN_IF_ERROR(s->wait(deadline_in(milliseconds(5000))));
    if (got != i) return absl::InternalError(absl::StrCat("message ", i, " arrived as ", got));
  }
  // Size mismatch is INVALID_ARGUMENT on the receiver (both directions).
  {
    char big[16] = {}, small[8] = {};
    TANDEM_ASSIGN_OR_RETURN(auto s1, comm.isend(big, 16, next, 11));
    TANDEM_ASSIGN_OR_RETURN(auto s2, comm.isend(small, 4, next, 12));
    TANDEM_RETURN_IF_ERROR(
        expect_code(comm.recv(small, 8, prev, 11, deadline_in(milliseconds(5000))),
                    absl::StatusCode::kInvalidArgument, "longer message"));
    TANDEM_RETURN_IF_ERROR(
        expect_code(comm.recv(big, 16, prev, 12, deadline_in(milliseconds(5000))),
                    absl::StatusCode::kInvalidArgument, "shorter message"));
    TANDEM_RETURN_IF_ERROR(s1->wait(deadline_in(milliseconds(5000))));
    TANDEM_RETURN_IF_ERROR(s2->wait(deadline_in(milliseconds(5000))));
  }
  TANDEM_RETURN_IF_ERROR(expect_code(comm.isend(nullptr, 0, n, 0).status(),
                                     absl::StatusCode::kInvalidArgument, "bad peer"));
  // Nothing sent: DEADLINE_EXCEEDED, and the request can be waited on again,
  // or dropped (which cancels it).
  {
    uint32_t v = 0;
    TANDEM_ASSIGN_OR_RETURN(auto r, comm.irecv(&v, 4, prev, 77));
    TANDEM_RETURN_IF_ERROR(expect_code(r->wait(deadline_in(milliseconds(50))),
                                       absl::StatusCode::kDeadlineExceeded, "idle recv"));
    TANDEM_RETURN_IF_ERROR(expect_code(r->wait(deadline_in(milliseconds(20))),
                                       absl::StatusCode::kDeadlineExceeded, "idle recv again"));
    if (r->test()) return absl::InternalError("test() says an idle recv completed");
  }
  TANDEM_RETURN_IF_ERROR(comm.barrier(deadline_in(milliseconds(10000))));
  // abort() from another thread ends a wait promptly with ABORTED.
  {
    uint32_t v = 0;
    TANDEM_ASSIGN_OR_RETURN(auto r, comm.irecv(&v, 4, prev, 78));
    std::thread aborter([&comm] {
      std::this_thread::sleep_for(milliseconds(100));
      comm.abort(absl::CancelledError("test abort"));
    });
    auto t0 = Clock::now();
    absl::Status s = r->wait(deadline_in(milliseconds(10000)));
    aborter.join();
    TANDEM_RETURN_IF_ERROR(expect_code(s, absl::StatusCode::kAborted, "aborted wait"));
    if (Clock::now() - t0 > milliseconds(2000)) return absl::InternalError("abort was slow");
    TANDEM_RETURN_IF_ERROR(expect_code(comm.isend(&v, 4, next, 1).status(),
                                       absl::StatusCode::kAborted, "send after abort"));
  }
  return absl::OkStatus();
}

float value_of(int rank, size_t i) { return static_cast<float>((rank + 1) * 0.5 + (i % 97)); }

absl::Status collectives(Communicator& comm) {
  const int n = comm.size(), me = comm.rank();
  auto deadline = [] { return deadline_in(milliseconds(20000)); };
  for (size_t count : {size_t{1}, size_t{1000}, size_t{100003}}) {
    std::vector<float> v(count);
    for (size_t i = 0; i < count; ++i) v[i] = value_of(me, i);
    TANDEM_RETURN_IF_ERROR(
        comm.all_reduce(v.data(), count, DataType::kF32, ReduceOp::kSum, deadline()));
    for (size_t i = 0; i < count; ++i) {
      float want = 0;
      for (int r = 0; r < n; ++r) want += value_of(r, i);
      if (std::fabs(v[i] - want) > 1e-3f * std::fabs(want)) {
        return absl::InternalError(absl::StrCat("all_reduce[", i, "] = ", v[i], ", want ", want));
      }
    }
    std::vector<int32_t> mine(count), all(count * n);
    for (size_t i = 0; i < count; ++i) mine[i] = me * 1000003 + static_cast<int32_t>(i);
    TANDEM_RETURN_IF_ERROR(
        comm.all_gather(mine.data(), all.data(), count, DataType::kI32, deadline()));
    for (int r = 0; r < n; ++r) {
      for (size_t i = 0; i < count; ++i) {
        if (all[r * count + i] != r * 1000003 + static_cast<int32_t>(i)) {
          return absl::InternalError(absl::StrCat("all_gather slot ", r, "[", i, "] wrong"));
        }
      }
    }
    for (int root = 0; root < n; ++root) {
      std::vector<uint8_t> b(count * 3, me == root ? 0 : 0xEE);
      if (me == root) {
        for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 5 + root);
      }
      TANDEM_RETURN_IF_ERROR(comm.broadcast(b.data(), b.size(), root, deadline()));
      for (size_t i = 0; i < b.size(); ++i) {
        if (b[i] != static_cast<uint8_t>(i * 5 + root)) {
          return absl::InternalError(absl::StrCat("broadcast from ", root, " byte ", i, " wrong"));
        }
      }
    }
    TANDEM_RETURN_IF_ERROR(comm.barrier(deadline()));
  }
  return absl::OkStatus();
}

// Every rank exchanges with every other each iteration; the last rank kills
// itself (SIGKILL) mid-run. The survivors must see an error, fast.
absl::Status kill_one(Communicator& comm) {
  const int n = comm.size(), me = comm.rank();
  auto last_ok = Clock::now();
  for (int iter = 0; iter < 1000000; ++iter) {
    if (me == n - 1 && iter == 200) ::raise(SIGKILL);
    std::vector<uint64_t> out(n, iter), in(n);
    std::vector<std::unique_ptr<Request>> reqs;
    absl::Status s;
    for (int p = 0; p < n && s.ok(); ++p) {
      if (p == me) continue;
      auto r = comm.irecv(&in[p], 8, p, 3);
      if (!r.ok())
        s = r.status();
      else
        reqs.push_back(std::move(*r));
      auto w = comm.isend(&out[p], 8, p, 3);
      if (!w.ok())
        s = w.status();
      else
        reqs.push_back(std::move(*w));
    }
    for (auto& r : reqs) {
      if (s.ok()) s = r->wait(deadline_in(milliseconds(15000)));
    }
    if (!s.ok()) {
      auto ms = std::chrono::duration_cast<milliseconds>(Clock::now() - last_ok).count();
      std::printf("DETECTED iteration %d after %lld ms: %s\n", iter, static_cast<long long>(ms),
                  s.ToString().c_str());
      return s;
    }
    last_ok = Clock::now();
  }
  return absl::InternalError("the victim never died");
}

// Large all_reduces (and, with `with_p2p`, large exchanges with the next and
// previous rank) until something fails; the test kills a rank or takes the
// link down meanwhile. Prints "PROGRESS <iter>" (flushed) so the test knows
// the stream runs, and "DETECTED ..." with how long after the last good
// iteration the failure surfaced. Every call has a short deadline, so a
// silent peer costs at most that.
absl::Status stream(Communicator& comm, bool with_p2p) {
  const int n = comm.size(), me = comm.rank();
  const char* env_ms = std::getenv("TANDEM_TEST_OP_DEADLINE_MS");
  const milliseconds op_deadline(env_ms != nullptr ? std::atoi(env_ms) : 4000);
  const size_t count = size_t{1} << 20;  // 4 MiB of f32: the ring path, chunked
  std::vector<float> v(count);
  std::vector<uint8_t> out(count), in(count);
  const int next = (me + 1) % n, prev = (me + n - 1) % n;
  auto last_ok = Clock::now();
  const auto give_up = Clock::now() + milliseconds(60000);
  for (int iter = 0; Clock::now() < give_up; ++iter) {
    for (size_t i = 0; i < count; ++i) v[i] = static_cast<float>(me + 1 + (i + iter) % 5);
    absl::Status s =
        comm.all_reduce(v.data(), count, DataType::kF32, ReduceOp::kSum, deadline_in(op_deadline));
    if (s.ok()) {
      // sum over r of (r + 1 + k) = n(n+1)/2 + n k: small integers, exact in f32.
      for (size_t i = 0; i < count; i += 4099) {
        float want = static_cast<float>(n * (n + 1) / 2 + n * static_cast<int>((i + iter) % 5));
        if (v[i] != want) {
          return absl::InternalError(
              absl::StrCat("iteration ", iter, ": all_reduce[", i, "] = ", v[i], ", want ", want));
        }
      }
    }
    if (s.ok() && with_p2p) {
      for (size_t i = 0; i < count; ++i) out[i] = pattern(me, next, i, iter & 0xff);
      auto r = comm.irecv(in.data(), count, prev, 4);
      auto w = comm.isend(out.data(), count, next, 4);
      if (!r.ok()) s = r.status();
      if (s.ok() && !w.ok()) s = w.status();
      if (s.ok()) s = (*r)->wait(deadline_in(op_deadline));
      if (s.ok()) s = (*w)->wait(deadline_in(op_deadline));
      for (size_t i = 0; s.ok() && i < count; i += 4099) {
        if (in[i] != pattern(prev, me, i, iter & 0xff)) {
          return absl::InternalError(absl::StrCat("iteration ", iter, ": bad byte ", i));
        }
      }
    }
    if (!s.ok()) {
      auto ms = std::chrono::duration_cast<milliseconds>(Clock::now() - last_ok).count();
      std::printf("DETECTED iteration %d after %lld ms: %s\n", iter, static_cast<long long>(ms),
                  s.ToString().c_str());
      std::fflush(stdout);
      return s;
    }
    last_ok = Clock::now();
    if (iter % 5 == 0) {
      std::printf("PROGRESS %d\n", iter);
      std::fflush(stdout);
    }
  }
  return absl::InternalError("no fault came within 60 s");
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Ping-pong latency (8 B) and streaming bandwidth (1 MiB) between ranks 0, 1.
absl::Status bench(Communicator& comm) {
  if (comm.size() < 2 || comm.rank() > 1) return comm.barrier(deadline_in(milliseconds(60000)));
  const int peer = 1 - comm.rank();
  auto dl = [] { return deadline_in(milliseconds(30000)); };
  std::vector<double> lat;
  char small[8] = {};
  for (int rep = 0; rep < 7; ++rep) {
    const int iters = 2000;
    auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i) {
      if (comm.rank() == 0) {
        TANDEM_RETURN_IF_ERROR(comm.send(small, 8, peer, 1, dl()));
        TANDEM_RETURN_IF_ERROR(comm.recv(small, 8, peer, 1, dl()));
      } else {
        TANDEM_RETURN_IF_ERROR(comm.recv(small, 8, peer, 1, dl()));
        TANDEM_RETURN_IF_ERROR(comm.send(small, 8, peer, 1, dl()));
      }
    }
    lat.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / iters / 2);
  }
  const size_t bytes = 1 << 20;
  const int window = 16;
  std::vector<char> buf(bytes * window, 1);
  std::vector<double> bw;
  for (int rep = 0; rep < 7; ++rep) {
    const int rounds = 8;
    auto t0 = Clock::now();
    for (int r = 0; r < rounds; ++r) {
      std::vector<std::unique_ptr<Request>> reqs;
      for (int w = 0; w < window; ++w) {
        TANDEM_ASSIGN_OR_RETURN(auto q, comm.rank() == 0
                                            ? comm.isend(buf.data() + w * bytes, bytes, peer, 2)
                                            : comm.irecv(buf.data() + w * bytes, bytes, peer, 2));
        reqs.push_back(std::move(q));
      }
      for (auto& q : reqs) TANDEM_RETURN_IF_ERROR(q->wait(dl()));
      // A one-byte ack keeps the sender from running ahead of the receiver.
      if (comm.rank() == 0) {
        TANDEM_RETURN_IF_ERROR(comm.recv(small, 1, peer, 3, dl()));
      } else {
        TANDEM_RETURN_IF_ERROR(comm.send(small, 1, peer, 3, dl()));
      }
    }
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    bw.push_back(static_cast<double>(bytes) * window * rounds / s / 1e9);
  }
  if (comm.rank() == 0) {
    std::printf("BENCH latency_8B_us=%.2f bandwidth_1MiB_GBps=%.2f\n", median(lat), median(bw));
  }
  return comm.barrier(deadline_in(milliseconds(60000)));
}

// The start-up link check: rank 0 prints what it measured of each link.
absl::Status link_probe(Communicator& comm) {
  const auto start = Clock::now();
  TANDEM_ASSIGN_OR_RETURN(auto links, probe_links(comm, LinkProbeOptions{}));
  for (const LinkMeasurement& m : links) {
    if (m.round_trip_us <= 0 || m.bandwidth_gbps <= 0) {
      return absl::InternalError(absl::StrCat("measured nothing: ", describe_link(m)));
    }
    std::printf("%s\n", describe_link(m).c_str());
  }
  std::printf("PROBED in %lld ms\n", static_cast<long long>(std::chrono::duration_cast<milliseconds>(
                                                                Clock::now() - start)
                                                                .count()));
  return absl::OkStatus();
}

// The last rank dies while rank 0 measures the links: rank 0 (and any other
// rank) must come back with an error, within the probe's op timeout.
absl::Status link_probe_peer_dies(Communicator& comm) {
  if (comm.rank() == comm.size() - 1) {
    std::this_thread::sleep_for(milliseconds(20));
    std::fflush(stdout);
    ::_exit(7);
  }
  LinkProbeOptions options;
  options.timeout = milliseconds(3000);
  options.max_round_trips = 1000000;  // keep rank 0 measuring until the peer is gone
  options.budget = milliseconds(5000);
  const auto start = Clock::now();
  absl::Status s = probe_links(comm, options).status();
  std::printf("DETECTED %s after %lld ms\n", s.ToString().c_str(),
              static_cast<long long>(
                  std::chrono::duration_cast<milliseconds>(Clock::now() - start).count()));
  return s.ok() ? absl::InternalError("the probe passed with a dead peer") : s;
}

// What the decode path does per layer (an all_reduce of a hidden state) and
// per pipeline hop (a tagged exchange), repeated after a warm-up: none of it
// may allocate, at either end.
absl::Status no_alloc(Communicator& comm) {
  std::vector<float> hidden(2048, 1.0f);
  // A 32 KiB hidden state too: with 2 ranks on shared memory it goes through
  // the peer's memory (transport/ucx/peer_memory.h).
  std::vector<float> wide(8192, 1.0f);
  const int peer = (comm.rank() + 1) % comm.size();
  auto step = [&]() -> absl::Status {
    TANDEM_RETURN_IF_ERROR(comm.all_reduce(wide.data(), wide.size(), DataType::kF32,
                                           ReduceOp::kSum, deadline_in(milliseconds(5000))));
    TANDEM_RETURN_IF_ERROR(comm.all_reduce(hidden.data(), hidden.size(), DataType::kF32,
                                           ReduceOp::kSum, deadline_in(milliseconds(5000))));
    std::fill(hidden.begin(), hidden.end(), 1.0f);
    TANDEM_ASSIGN_OR_RETURN(auto r, comm.irecv(hidden.data(), 4096, peer, 21));
    TANDEM_ASSIGN_OR_RETURN(auto s, comm.isend(hidden.data() + 1024, 4096, peer, 21));
    TANDEM_RETURN_IF_ERROR(r->wait(deadline_in(milliseconds(5000))));
    return s->wait(deadline_in(milliseconds(5000)));
  };
  return tandem::testing::expect_steps_allocate_nothing(step, 20, 200,
                                                       absl::StrCat("rank ", comm.rank()));
}

}  // namespace

absl::Status run_ucx_scenario(const std::string& scenario, Bootstrap& boot) {
  UcxOptions options;
  const char* pf = std::getenv("TANDEM_TEST_PEER_FAILURE");
  options.peer_failure_detection = pf == nullptr || std::strcmp(pf, "0") != 0;
  TANDEM_ASSIGN_OR_RETURN(auto comm, make_ucx_communicator(boot, options));
  absl::Status s;
  if (scenario == "ucx_p2p") {
    s = p2p(*comm);
  } else if (scenario == "ucx_collectives") {
    s = collectives(*comm);
  } else if (scenario == "ucx_kill") {
    return kill_one(*comm);  // no final barrier: a rank is gone
  } else if (scenario == "ucx_stream") {
    return stream(*comm, /*with_p2p=*/false);  // ends with a fault: no final barrier
  } else if (scenario == "ucx_stream_p2p") {
    return stream(*comm, /*with_p2p=*/true);
  } else if (scenario == "ucx_all") {
    s = collectives(*comm);
    if (s.ok()) s = p2p(*comm);  // last: it ends by aborting the communicator
  } else if (scenario == "ucx_link_probe") {
    s = link_probe(*comm);
  } else if (scenario == "ucx_link_probe_peer_dies") {
    return link_probe_peer_dies(*comm);  // a rank is gone: no final barrier
  } else if (scenario == "ucx_no_alloc") {
    s = no_alloc(*comm);
  } else if (scenario == "ucx_bench") {
    s = bench(*comm);
  } else if (scenario.rfind("ucx_large_", 0) == 0) {
    s = run_large_all_reduce_scenario(scenario, *comm);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown scenario '", scenario, "'"));
  }
  TANDEM_RETURN_IF_ERROR(s);
  // Leave together: rank 0 serves the store.
  return boot.barrier(boot.default_deadline());
}

}  // namespace tandem::transport
