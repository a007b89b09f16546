// The serving cluster's internal control plane, over the transport bootstrap
// store (see cluster.proto for why not gRPC), beside the engine's own
// exchanges over the communicator: every worker publishes a RankReport
// heartbeat under its key and waits for rank 0's ControlCommand; rank 0's
// ClusterMonitor reads the reports, tells healthy ranks from silent or failed
// ones, and stops the workers at shutdown with a closing barrier.
#pragma once

#include <atomic>
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
#include "launcher/local_ranks.h"
#include "tandem/v1/cluster.pb.h"
#include "transport/bootstrap/bootstrap.h"
#include "transport/communicator.h"

namespace tandem::launcher::serve {

using Clock = std::chrono::steady_clock;

inline constexpr char kControlKey[] = "tandem/serve/control";
std::string rank_key(int rank);

// This process's host name, pid, host memory and resident set.
v1::RankReport describe_this_process(int rank);

struct WorkerOptions {
  std::chrono::milliseconds heartbeat{500};
};

// A worker's side of the control plane, on a thread of its own while the
// worker's engine runs: publishes this rank's RankReport every heartbeat and
// watches for rank 0's ControlCommand. When the store goes away (rank 0 died)
// it raises lost_flag(), which the engine's run_worker() takes as its stop
// flag, so the worker leaves even while it waits for the next step.
class WorkerHeartbeat {
 public:
  WorkerHeartbeat(transport::Bootstrap& boot, const WorkerOptions& options);
  ~WorkerHeartbeat();
  WorkerHeartbeat(const WorkerHeartbeat&) = delete;
  WorkerHeartbeat& operator=(const WorkerHeartbeat&) = delete;

  // LOADING at first; HEALTHY once loaded, FAILED with why.
  void set_health(v1::RankHealth health, const std::string& detail = "");
  const std::atomic<bool>* lost_flag() const { return &lost_; }
  // UNAVAILABLE naming the cause once rank 0 is lost; OK otherwise.
  absl::Status lost_status();
  // Waits for rank 0's shutdown command, then meets the other ranks at the
  // closing barrier. UNAVAILABLE when rank 0 is lost first, DEADLINE_EXCEEDED
  // at `deadline`.
  absl::Status finish(Clock::time_point deadline);

 private:
  void run();
  absl::Status publish();

  transport::Bootstrap& boot_;
  const WorkerOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  v1::RankReport report_;  // guarded by mu_
  bool command_ = false;   // rank 0's shutdown command arrived
  absl::Status lost_status_;
  std::atomic<bool> lost_{false};
  bool stop_ = false;
  std::thread thread_;
};

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
  // Rank 0's communicator, aborted when a rank fails so that a step in
  // flight ends at once instead of at its deadline; null to detach.
  void set_comm(transport::Communicator* comm);
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
  transport::Communicator* comm_ = nullptr;  // guarded by mu_
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
