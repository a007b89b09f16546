// A start-up measure of the links a cluster will use. A misconfigured link
// silently falls back to TCP or to the slow port: rank 0 times a short train
// of hidden-state-sized round trips and a few multi-MiB messages to every
// peer, within a small time budget, so the launcher can say what it measured
// (and refuse to start when the user asked for better).
//
// It is a collective: every rank calls probe_links() once, right after the
// communicator is up. Rank 0 leads; the others answer until rank 0 sends its
// verdict, which every rank returns, so all ranks go on or stop together.
// Every wait has a deadline: a dead or silent peer is an error on every rank
// that waits on it, never a hang.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "transport/communicator.h"

namespace tandem::transport {

// A user tag of its own, far from the engine's.
inline constexpr uint32_t kLinkProbeTag = kMaxUserTag - 3;

struct LinkProbeOptions {
  // A hidden state of a small model in f16; the same on every rank.
  size_t small_bytes = 8192;
  int max_round_trips = 50;
  int min_round_trips = 5;
  size_t large_bytes = size_t{4} << 20;
  int max_large_messages = 4;
  // Rank 0's measuring time for all peers together; each peer gets at least
  // min_round_trips round trips and one large message, even past it.
  std::chrono::milliseconds budget{200};
  // Bounds every single wait (a peer that died or never calls in).
  std::chrono::milliseconds timeout{10000};
};

struct LinkMeasurement {
  int rank_a = 0;
  int rank_b = 0;
  std::string backend;  // "ucx", "mpi", "local"
  std::string path;     // Communicator::link_path(): "tcp/lo"; may be empty
  size_t small_bytes = 0;
  int round_trips = 0;
  double round_trip_us = 0;  // median
  size_t large_bytes = 0;
  int large_messages = 0;
  double bandwidth_gbps = 0;  // GB/s (1e9 bytes/s), the best large message
};

// Rank 0's decision on the measurements: OK to go on, or why not (every rank
// then returns this status).
using LinkJudge = std::function<absl::Status(const std::vector<LinkMeasurement>&)>;

// Collective. On rank 0, one measurement per peer (rank_a = 0); elsewhere an
// empty vector. With `measure` false on rank 0, it only tells the peers to go
// on (their own `measure` is not looked at: rank 0 decides).
absl::StatusOr<std::vector<LinkMeasurement>> probe_links(Communicator& comm,
                                                         const LinkProbeOptions& options,
                                                         const LinkJudge& judge = nullptr,
                                                         bool measure = true);

// "link rank 0 <-> 1: ucx tcp/lo, 8 KiB round trip 24 us, 1.3 GB/s".
std::string describe_link(const LinkMeasurement& m);

}  // namespace tandem::transport
