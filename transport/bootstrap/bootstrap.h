// Rendezvous: rank 0 serves a small authenticated TCP store (StoreServer);
// every rank, rank 0 included, connects to it as a client. Backends use it to
// swap their connection details (UCX worker addresses, NCCL's unique id)
// before they open their own links. Every call has a deadline.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "transport/bootstrap/config.h"
#include "transport/bootstrap/socket.h"
#include "transport/bootstrap/store_server.h"

namespace tandem::transport {

class Bootstrap {
 public:
  // Starts the store on rank 0, connects and authenticates every rank, and
  // waits until all ranks have joined, all within config.timeout. Errors:
  // PERMISSION_DENIED when the store refused our token, UNAUTHENTICATED when
  // the store could not prove it holds the token, DEADLINE_EXCEEDED naming
  // the ranks that never joined, UNAVAILABLE when the store went away.
  static absl::StatusOr<std::unique_ptr<Bootstrap>> create(const BootstrapConfig& config);
  ~Bootstrap();

  int rank() const { return config_.rank; }
  int world_size() const { return config_.world_size; }
  // The store's port (on rank 0, the one actually bound).
  uint16_t port() const { return port_; }
  // now + the configured timeout: the default for callers without their own.
  BootstrapDeadline default_deadline() const { return BootstrapClock::now() + config_.timeout; }

  absl::Status set(std::string_view key, std::string_view value, BootstrapDeadline deadline);
  // Waits until `key` is set. DEADLINE_EXCEEDED when it never is.
  absl::StatusOr<std::string> get(std::string_view key, BootstrapDeadline deadline);
  // Every rank must call barrier() the same number of times, in the same
  // order. DEADLINE_EXCEEDED names the ranks that did not arrive.
  absl::Status barrier(BootstrapDeadline deadline);
  // Publishes `value` under `name` and returns every rank's, indexed by rank.
  absl::StatusOr<std::vector<std::string>> all_gather(std::string_view name, std::string_view value,
                                                      BootstrapDeadline deadline);
  // 0, 1, 2, ...: one number per call on this rank. Every rank that makes its
  // communicators over this bootstrap in the same order gets the same number
  // for each, whatever this process did over earlier bootstraps.
  int next_sequence() { return next_sequence_++; }

 private:
  Bootstrap() = default;
  // Connects and authenticates, retrying until `deadline` while rank 0 is not
  // listening yet or tells this (restarted) rank to wait for its next cluster.
  absl::Status connect(BootstrapDeadline deadline);
  // One attempt; UNAVAILABLE with `*retry_later` set when told to wait.
  absl::Status connect_once(BootstrapDeadline deadline, bool* retry_later);
  absl::Status wait_named(std::string_view name, BootstrapDeadline deadline);
  absl::StatusOr<std::pair<wire::MsgType, std::string>> call(wire::MsgType type,
                                                             std::string_view payload,
                                                             BootstrapDeadline deadline);

  BootstrapConfig config_;
  uint16_t port_ = 0;
  std::unique_ptr<StoreServer> server_;  // rank 0 only
  std::unique_ptr<Channel> channel_;
  std::mutex mu_;  // one request in flight on the channel
  uint64_t n_barriers_ = 0;
  std::atomic<int> next_sequence_{0};
};

}  // namespace tandem::transport
