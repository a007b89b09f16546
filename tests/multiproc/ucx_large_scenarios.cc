// Large all_reduces over UCX: with 2 ranks on shared memory they go through
// the peer's memory (transport/ucx/peer_memory.h), otherwise through the
// default collectives. Sizes straddle the switch-over and the chunks, odd
// counts for every summable type; and abort() while the peer is late.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "tests/multiproc/ucx_scenarios.h"
#include "transport/collectives/reduce.h"

namespace tandem::transport {
namespace {

using std::chrono::milliseconds;

// Small integers: exact in every type, so every rank must hold these bits.
int small_value(int rank, size_t i, int round) {
  return static_cast<int>((rank * 3 + i * 7 + round) % 13);
}

uint32_t encode(DataType type, int v) {
  switch (type) {
    case DataType::kF32: {
      float f = static_cast<float>(v);
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      return bits;
    }
    case DataType::kF16: return f32_to_f16(static_cast<float>(v));
    case DataType::kBF16: return f32_to_bf16(static_cast<float>(v));
    default: return static_cast<uint32_t>(v);
  }
}

// `all`: every size and type; otherwise one odd size of f32 (a check that
// the communicator still works).
absl::Status check_sizes(Communicator& comm, bool all = true) {
  const int n = comm.size(), me = comm.rank();
  // Around the 16 KiB switch-over (for f32), the 64 KiB one of the default
  // collectives, the 256 KiB chunks, and a few MiB.
  const std::vector<size_t> counts =
      all ? std::vector<size_t>{4095, 4097, 16383, 16385, 65537, 100003, (size_t{1} << 20) + 7}
          : std::vector<size_t>{100003};
  const std::vector<DataType> types =
      all ? std::vector<DataType>{DataType::kF32, DataType::kBF16, DataType::kF16, DataType::kI32}
          : std::vector<DataType>{DataType::kF32};
  int round = 0;
  for (DataType type : types) {
    const size_t esize = dtype_size(type);
    for (size_t count : counts) {
      ++round;
      std::vector<std::byte> buf(count * esize);
      for (size_t i = 0; i < count; ++i) {
        uint32_t bits = encode(type, small_value(me, i, round));
        std::memcpy(buf.data() + i * esize, &bits, esize);
      }
      TANDEM_RETURN_IF_ERROR(comm.all_reduce(buf.data(), count, type, ReduceOp::kSum,
                                             deadline_in(milliseconds(20000))));
      for (size_t i = 0; i < count; ++i) {
        int want = 0;
        for (int r = 0; r < n; ++r) want += small_value(r, i, round);
        uint32_t bits = 0, want_bits = encode(type, want);
        std::memcpy(&bits, buf.data() + i * esize, esize);
        if (bits != want_bits) {
          return absl::InternalError(absl::StrCat(std::string(dtype_name(type)), " all_reduce of ", count,
                                                  ": element ", i, " has bits ", bits, ", want ",
                                                  want_bits, " (", want, ")"));
        }
      }
      // A small one between: the latency path and the large one share tags.
      int32_t one = me + 1;
      TANDEM_RETURN_IF_ERROR(comm.all_reduce(&one, 1, DataType::kI32, ReduceOp::kSum,
                                             deadline_in(milliseconds(20000))));
      if (one != n * (n + 1) / 2) return absl::InternalError("small all_reduce wrong");
    }
  }
  return absl::OkStatus();
}

// Rank 0 enters a large all_reduce and is aborted while rank 1 is late; rank
// 1 then finds that rank 0 left. Rank 0's buffer must not change after its
// call returned (nothing of the peer's lands in it).
absl::Status abort_while_peer_late(Communicator& comm) {
  const int me = comm.rank();
  const size_t count = size_t{1} << 20;
  std::vector<float> v(count, static_cast<float>(me + 1));
  if (me == 0) {
    std::thread aborter([&comm] {
      std::this_thread::sleep_for(milliseconds(100));
      comm.abort(absl::CancelledError("test abort"));
    });
    const auto t0 = Clock::now();
    absl::Status s = comm.all_reduce(v.data(), count, DataType::kF32, ReduceOp::kSum,
                                     deadline_in(milliseconds(10000)));
    aborter.join();
    if (!absl::IsAborted(s)) return absl::InternalError("expected ABORTED, got " + s.ToString());
    if (Clock::now() - t0 > milliseconds(2000)) return absl::InternalError("abort was slow");
    // A later call fails at once.
    const auto t1 = Clock::now();
    s = comm.all_reduce(v.data(), count, DataType::kF32, ReduceOp::kSum,
                        deadline_in(milliseconds(10000)));
    if (!absl::IsAborted(s)) return absl::InternalError("expected ABORTED, got " + s.ToString());
    if (Clock::now() - t1 > milliseconds(100)) {
      return absl::InternalError("an all_reduce after abort() did not fail at once");
    }
    std::this_thread::sleep_for(milliseconds(800));  // rank 1 runs its part meanwhile
    for (size_t i = 0; i < count; ++i) {
      if (v[i] != 1.0f) {
        return absl::InternalError(absl::StrCat("element ", i, " changed after the abort"));
      }
    }
    return absl::OkStatus();
  }
  std::this_thread::sleep_for(milliseconds(400));
  absl::Status s = comm.all_reduce(v.data(), count, DataType::kF32, ReduceOp::kSum,
                                   deadline_in(milliseconds(1500)));
  // Rank 0's header went out before its abort; its exit word says it left.
  if (!absl::IsUnavailable(s)) {
    return absl::InternalError("rank 1 expected UNAVAILABLE, got " + s.ToString());
  }
  return absl::OkStatus();
}

// Pairs split from the world, as the engine makes its TP groups (it splits
// even when the group is the whole world): ranks 2i and 2i+1 form group
// i + 1. Each pair runs the sizes, then the world one all_reduce.
absl::Status check_sizes_in_pairs(Communicator& comm) {
  const int me = comm.rank();
  const int first = me - me % 2;
  if (first + 1 >= comm.size()) return absl::InvalidArgumentError("an odd world has no pairs");
  const int pair[] = {first, first + 1};
  TANDEM_ASSIGN_OR_RETURN(auto group, comm.split(pair, static_cast<uint32_t>(1 + first / 2)));
  TANDEM_RETURN_IF_ERROR(check_sizes(*group));
  return check_sizes(comm, /*all=*/false);
}

}  // namespace

absl::Status run_large_all_reduce_scenario(const std::string& scenario, Communicator& comm) {
  if (scenario == "ucx_large_all_reduce") return check_sizes(comm);
  if (scenario == "ucx_large_all_reduce_abort") return abort_while_peer_late(comm);
  if (scenario == "ucx_large_all_reduce_pairs") return check_sizes_in_pairs(comm);
  return absl::InvalidArgumentError(absl::StrCat("unknown scenario '", scenario, "'"));
}

}  // namespace tandem::transport
