// The serving cluster's internal control plane, over the transport bootstrap
// store (see cluster.proto for why not gRPC): every worker publishes a
// RankReport heartbeat under its key and waits for rank 0's ControlCommand;
// rank 0's ClusterMonitor reads the reports, tells healthy ranks from silent
// or failed ones, and stops the workers at shutdown with a closing barrier.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "launcher/serve/local_ranks.h"
#include "tandem/v1/cluster.pb.h"
#include "transport/bootstrap/bootstrap.h"

namespace tandem::launcher::serve {

using Clock = std::chrono::steady_clock;

inline constexpr char kControlKey[] = "tandem/serve/control";
std::string rank_key(int rank);

// This process's host name, pid, host memory and resident set.
v1::RankReport describe_this_process(int rank);

struct WorkerOptions {
  std::chrono::milliseconds heartbeat{500};
  // How long the closing barrier may wait for the other ranks.
  std::chrono::milliseconds closing_timeout{10000};
};

// The life of every rank but 0 after the rendezvous: load its part of the
// model, report, heartbeat, and return OK when rank 0 shuts the cluster down,
// or UNAVAILABLE when rank 0 is gone (its store closed the connection).
absl::Status run_worker(transport::Bootstrap& boot, const WorkerOptions& options);

class ClusterMonitor {
 public:
  // `boot` is null for a world of one. `children` (may be null) are the ranks
  // this process forked; their exits are seen at once.
  ClusterMonitor(transport::Bootstrap* boot, int world_size, LocalRanks* children,
                 std::chrono::milliseconds heartbeat_timeout);
  ~ClusterMonitor();
  ClusterMonitor(const ClusterMonitor&) = delete;
  ClusterMonitor& operator=(const ClusterMonitor&) = delete;

  // Waits until every worker reports it has loaded. The failure of a rank,
  // or DEADLINE_EXCEEDED naming the ranks still loading.
  absl::Status wait_all_loaded(Clock::time_point deadline);
  // The first rank failure seen (a FAILED report, an exit, or silence past
  // the heartbeat timeout), if any.
  std::optional<absl::Status> failure();
  // Every rank's status, rank 0 (this process) first.
  std::vector<v1::RankStatus> ranks();
  // Publishes the shutdown command and waits for the workers at the closing
  // barrier (skipped when a rank is already known dead).
  absl::Status stop_workers(const std::string& reason, Clock::time_point deadline);

 private:
  struct Seen {
    v1::RankReport report;
    bool reported = false;
    Clock::time_point last_change{};
    std::string exit;  // how its process ended, when this process forked it
  };
  void poll();

  transport::Bootstrap* boot_;
  const int world_size_;
  LocalRanks* children_;
  const std::chrono::milliseconds heartbeat_timeout_;
  const Clock::time_point started_;

  std::mutex mu_;
  std::map<int, Seen> seen_;  // ranks 1..world_size-1
  std::optional<absl::Status> failure_;
  bool stop_ = false;
  std::condition_variable stop_cv_;
  std::thread thread_;
};

}  // namespace tandem::launcher::serve
