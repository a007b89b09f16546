// The transport: one Communicator interface over threads in one process
// (local), UCX, MPI and NCCL. It is a standalone library, like NCCL: it knows
// nothing of models and has its own small DataType.
//
// Every operation takes a deadline and returns a status; nothing here aborts
// the process or blocks forever. Codes: DEADLINE_EXCEEDED when the deadline
// passes, UNAVAILABLE when a peer died or the link broke, ABORTED after
// abort(), INVALID_ARGUMENT for bad ranks, sizes or types.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tandem::transport {

enum class DataType : uint8_t { kF32, kF16, kBF16, kI32, kU8 };
size_t dtype_size(DataType type);
std::string_view dtype_name(DataType type);

enum class ReduceOp : uint8_t { kSum };

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;
inline Deadline deadline_in(std::chrono::milliseconds ms) { return Clock::now() + ms; }

// Completion handle of an asynchronous send or receive. Destroying a pending
// request cancels it (the buffer is no longer touched afterwards).
class Request {
 public:
  virtual ~Request() = default;
  // OK when complete; DEADLINE_EXCEEDED (the request stays pending and can be
  // waited on again), or the operation's error.
  virtual absl::Status wait(Deadline deadline) = 0;
  // True once complete (successfully or not); never blocks.
  virtual bool test() = 0;
};

// User tags must stay below kMaxUserTag; tags above are used by collectives.
inline constexpr uint32_t kMaxUserTag = 1u << 24;
// Tag layout of the default implementation: bits 0..23 a user tag, bit 24 set
// for collectives (the low bits then count collectives), bits 25..31 the
// sub-communicator (0 for a root communicator, group_id + 1 for a split), so a
// backend's p2p must accept every 32-bit tag. group_id stays below this.
inline constexpr uint32_t kMaxGroupId = 127;

// State of the default collectives (sequence number, scratch buffers, request
// lists), private to transport/collectives.
struct CollectiveState;

class Communicator {
 public:
  Communicator();
  virtual ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string_view backend() const = 0;
  // What carries this rank's traffic to `peer`, for the start-up log and the
  // link check: UCX's transport/device pairs ("tcp/eth0", "rc_mlx5/mlx5_0:1");
  // empty where the backend cannot say.
  virtual std::string link_path(int peer) const;

  // Point to point. Messages between one pair of ranks with one tag arrive in
  // order. A receive must name the exact size that was sent; a mismatch is
  // INVALID_ARGUMENT on the receiver.
  virtual absl::StatusOr<std::unique_ptr<Request>> isend(const void* data, size_t bytes, int peer,
                                                         uint32_t tag) = 0;
  virtual absl::StatusOr<std::unique_ptr<Request>> irecv(void* data, size_t bytes, int peer,
                                                         uint32_t tag) = 0;
  absl::Status send(const void* data, size_t bytes, int peer, uint32_t tag, Deadline deadline);
  absl::Status recv(void* data, size_t bytes, int peer, uint32_t tag, Deadline deadline);

  // Collectives. The defaults are built on isend/irecv and pick the
  // algorithm by size: a latency path for small messages, a direct exchange
  // for 2 ranks, recursive doubling or a pipelined ring beyond. Backends with
  // native collectives (MPI, NCCL) override them. f16 and bf16 sums
  // accumulate in f32.
  virtual absl::Status all_reduce(void* data, size_t count, DataType type, ReduceOp op,
                                  Deadline deadline);
  // recv holds size() * count elements, rank r's at offset r * count.
  virtual absl::Status all_gather(const void* send, void* recv, size_t count, DataType type,
                                  Deadline deadline);
  virtual absl::Status broadcast(void* data, size_t bytes, int root, Deadline deadline);
  virtual absl::Status barrier(Deadline deadline);

  // A communicator over `ranks` (ranks of this communicator, ascending, this
  // rank among them): a TP group or a PP pair. `group_id` must be unique per
  // split and the same on every member; it keeps the groups' traffic apart.
  virtual absl::StatusOr<std::unique_ptr<Communicator>> split(std::span<const int> ranks,
                                                              uint32_t group_id);

  // Fails every outstanding and future operation with ABORTED, promptly.
  virtual void abort(const absl::Status& reason) = 0;

  // Threading: p2p calls may come from several threads at once; the
  // collectives of one communicator are called from one thread at a time (and
  // in the same order on every rank). Different communicators (a TP group and
  // a PP pair split from one world) may run their collectives concurrently.

 private:
  std::unique_ptr<CollectiveState> collective_state_;
};

}  // namespace tandem::transport
