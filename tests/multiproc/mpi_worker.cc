// One rank of the MPI backend's multi-process test (multiproc_mpi_test.cc),
// started by mpirun (or alone, as an MPI singleton). Runs a scenario and
// prints "RESULT rank <r> <CODE> <message>" as its last line; exits 0 only on
// OK. Scenarios: "all" (collectives, decode-sized steps that must allocate
// nothing, then point to point, ending with abort()), "singleton" (the same on one rank, not launched by mpirun).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "transport/collectives/reduce.h"
#include "transport/mpi/mpi_communicator.h"
#include "tests/support/allocation_counter.h"

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

// Every rank sends every size on several tags (high ones included: they
// land on the second MPI communicator) to every rank, itself included.
absl::Status exchange(Communicator& comm) {
  const int n = comm.size(), me = comm.rank();
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{4096}, size_t{(1 << 20) + 3}}) {
    for (uint32_t tag : {0u, kMaxUserTag - 1, kMaxUserTag | 5u, 0xFFFFFFFEu}) {
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
  return absl::OkStatus();
}

absl::Status p2p(Communicator& comm) {
  const int n = comm.size(), me = comm.rank();
  const int next = (me + 1) % n, prev = (me + n - 1) % n;
  TANDEM_RETURN_IF_ERROR(exchange(comm));
  // Same pair, same tag: in order.
  for (uint32_t i = 0; i < 50; ++i) {
    TANDEM_ASSIGN_OR_RETURN(auto s, comm.isend(&i, 4, next, 9));
    uint32_t got = 0;
    TANDEM_RETURN_IF_ERROR(comm.recv(&got, 4, prev, 9, deadline_in(milliseconds(5000))));
    TANDEM_RETURN_IF_ERROR(s->wait(deadline_in(milliseconds(5000))));
    if (got != i) return absl::InternalError(absl::StrCat("message ", i, " arrived as ", got));
  }
  // Two threads at once, on their own tags.
  {
    absl::Status results[2];
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t) {
      threads.emplace_back([&, t] {
        for (uint32_t i = 0; i < 200 && results[t].ok(); ++i) {
          uint64_t out = i * 2 + t, in = 0;
          auto s = comm.isend(&out, 8, next, 100 + t);
          if (!s.ok()) {
            results[t] = s.status();
            break;
          }
          results[t] = comm.recv(&in, 8, prev, 100 + t, deadline_in(milliseconds(10000)));
          if (results[t].ok()) results[t] = (*s)->wait(deadline_in(milliseconds(10000)));
          if (results[t].ok() && in != out) results[t] = absl::InternalError("thread data wrong");
        }
      });
    }
    for (auto& t : threads) t.join();
    for (auto& r : results) TANDEM_RETURN_IF_ERROR(r);
  }
  // Size mismatch is INVALID_ARGUMENT on the receiver, both ways; also for
  // a message over the eager limit (rendezvous protocol).
  {
    std::vector<char> big(1 << 20), small(8);
    TANDEM_ASSIGN_OR_RETURN(auto s1, comm.isend(big.data(), 16, next, 11));
    TANDEM_ASSIGN_OR_RETURN(auto s2, comm.isend(small.data(), 4, next, 12));
    TANDEM_ASSIGN_OR_RETURN(auto s3, comm.isend(big.data(), big.size(), next, 13));
    TANDEM_RETURN_IF_ERROR(
        expect_code(comm.recv(small.data(), 8, prev, 11, deadline_in(milliseconds(5000))),
                    absl::StatusCode::kInvalidArgument, "longer message"));
    TANDEM_RETURN_IF_ERROR(
        expect_code(comm.recv(big.data(), 16, prev, 12, deadline_in(milliseconds(5000))),
                    absl::StatusCode::kInvalidArgument, "shorter message"));
    std::vector<char> half(big.size() / 2);
    TANDEM_RETURN_IF_ERROR(
        expect_code(comm.recv(half.data(), half.size(), prev, 13, deadline_in(milliseconds(5000))),
                    absl::StatusCode::kInvalidArgument, "longer large message"));
    TANDEM_RETURN_IF_ERROR(s1->wait(deadline_in(milliseconds(5000))));
    TANDEM_RETURN_IF_ERROR(s2->wait(deadline_in(milliseconds(5000))));
    TANDEM_RETURN_IF_ERROR(s3->wait(deadline_in(milliseconds(5000))));
  }
  TANDEM_RETURN_IF_ERROR(expect_code(comm.isend(nullptr, 0, n, 0).status(),
                                     absl::StatusCode::kInvalidArgument, "bad peer"));
  // Nothing sent: DEADLINE_EXCEEDED, the request can be waited on again,
  // and dropping it cancels it.
  {
    uint32_t v = 0;
    TANDEM_ASSIGN_OR_RETURN(auto r, comm.irecv(&v, 4, prev, 77));
    auto t0 = Clock::now();
    TANDEM_RETURN_IF_ERROR(expect_code(r->wait(deadline_in(milliseconds(50))),
                                       absl::StatusCode::kDeadlineExceeded, "idle recv"));
    if (Clock::now() - t0 > milliseconds(1000)) return absl::InternalError("deadline was late");
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
    if (n > 1) {  // a one-rank barrier has nothing to wait for
      TANDEM_RETURN_IF_ERROR(expect_code(comm.barrier(deadline_in(milliseconds(1000))),
                                         absl::StatusCode::kAborted, "barrier after abort"));
    }
  }
  return absl::OkStatus();
}

// Small integers: every partial sum is exact in f16 and bf16, so every
// rank must get exactly the reference.
float value_of(int rank, size_t i) {
  return static_cast<float>(rank + 1 + static_cast<int>(i % 13));
}

uint16_t to_half(float f, DataType type) {
  return type == DataType::kF16 ? f32_to_f16(f) : f32_to_bf16(f);
}
float from_half(uint16_t h, DataType type) {
  return type == DataType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
}

absl::Status all_reduce_check(Communicator& comm, size_t count, DataType type) {
  const int n = comm.size(), me = comm.rank();
  std::vector<float> f(count);
  std::vector<uint16_t> h(count);
  for (size_t i = 0; i < count; ++i) {
    f[i] = value_of(me, i);
    h[i] = to_half(f[i], type);
  }
  void* data = type == DataType::kF32 ? static_cast<void*>(f.data()) : h.data();
  TANDEM_RETURN_IF_ERROR(
      comm.all_reduce(data, count, type, ReduceOp::kSum, deadline_in(milliseconds(20000))));
  for (size_t i = 0; i < count; ++i) {
    float want = 0;
    for (int r = 0; r < n; ++r) want += value_of(r, i);
    float got = type == DataType::kF32 ? f[i] : from_half(h[i], type);
    if (got != want) {
      return absl::InternalError(absl::StrCat("all_reduce ", std::string(dtype_name(type)),
                                              " count ", count, " [", i, "] = ", got, ", want ",
                                              want));
    }
  }
  return absl::OkStatus();
}

absl::Status collectives(Communicator& comm) {
  const int n = comm.size(), me = comm.rank();
  auto deadline = [] { return deadline_in(milliseconds(20000)); };
  for (size_t count : {size_t{1}, size_t{1000}, size_t{100003}}) {
    for (DataType type : {DataType::kF32, DataType::kF16, DataType::kBF16}) {
      TANDEM_RETURN_IF_ERROR(all_reduce_check(comm, count, type));
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
    std::vector<uint16_t> hmine(count), hall(count * n);
    for (size_t i = 0; i < count; ++i) hmine[i] = f32_to_bf16(value_of(me, i));
    TANDEM_RETURN_IF_ERROR(
        comm.all_gather(hmine.data(), hall.data(), count, DataType::kBF16, deadline()));
    for (int r = 0; r < n; ++r) {
      for (size_t i = 0; i < count; ++i) {
        if (hall[r * count + i] != f32_to_bf16(value_of(r, i))) {
          return absl::InternalError(absl::StrCat("bf16 all_gather slot ", r, "[", i, "] wrong"));
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

// What the decode path does per layer (an all_reduce of a hidden state) and
// per pipeline hop (a tagged exchange), repeated after a warm-up: none of it
// may allocate.
absl::Status no_alloc(Communicator& comm) {
  std::vector<float> hidden(2048, 1.0f), hop(1024, 1.0f);
  const int next = (comm.rank() + 1) % comm.size();
  const int prev = (comm.rank() + comm.size() - 1) % comm.size();
  auto step = [&]() -> absl::Status {
    TANDEM_RETURN_IF_ERROR(comm.all_reduce(hidden.data(), hidden.size(), DataType::kF32,
                                           ReduceOp::kSum, deadline_in(milliseconds(5000))));
    std::fill(hidden.begin(), hidden.end(), 1.0f);
    TANDEM_ASSIGN_OR_RETURN(auto r, comm.irecv(hop.data(), 4096, prev, 21));
    TANDEM_ASSIGN_OR_RETURN(auto s, comm.isend(hidden.data(), 4096, next, 21));
    TANDEM_RETURN_IF_ERROR(r->wait(deadline_in(milliseconds(5000))));
    return s->wait(deadline_in(milliseconds(5000)));
  };
  return tandem::testing::expect_steps_allocate_nothing(step, 20, 200,
                                                       absl::StrCat("rank ", comm.rank()));
}

absl::Status run(const std::string& scenario, int& rank) {
  if (scenario != "all" && scenario != "singleton") {
    return absl::InvalidArgumentError(absl::StrCat("unknown scenario '", scenario, "'"));
  }
  const bool want_mpirun = scenario == "all";
  if (launched_by_mpirun() != want_mpirun) {
    return absl::InternalError(absl::StrCat("launched_by_mpirun() is ", !want_mpirun));
  }
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm, make_mpi_communicator());
  rank = comm->rank();
  if (comm->backend() != "mpi") return absl::InternalError("backend() is not mpi");
  if (!want_mpirun && comm->size() != 1) return absl::InternalError("a singleton is not size 1");
  // A second communicator over the same MPI works beside the first.
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> second, make_mpi_communicator());
  TANDEM_RETURN_IF_ERROR(second->barrier(deadline_in(milliseconds(10000))));
  second.reset();
  TANDEM_RETURN_IF_ERROR(collectives(*comm));
  TANDEM_RETURN_IF_ERROR(no_alloc(*comm));
  return p2p(*comm);
}

}  // namespace
}  // namespace tandem::transport

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: mpi_worker <all|singleton>\n");
    return 2;
  }
  int rank = -1;
  absl::Status s = tandem::transport::run(argv[1], rank);
  std::printf("RESULT rank %d %s %s\n", rank, absl::StatusCodeToString(s.code()).c_str(),
              std::string(s.message()).c_str());
  std::fflush(stdout);
  return s.ok() ? 0 : 3;
}
