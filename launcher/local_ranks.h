// Ranks 1..n-1 of a cluster on this box (`--local-ranks`, for generate, bench
// and serve): processes of this same binary and command line, started by
// rank 0 with the rendezvous in their environment (TANDEM_RANK,
// TANDEM_WORLD_SIZE, TANDEM_MASTER_*, TANDEM_CLUSTER_TOKEN and kLocalRankVar).
// A thread watches them: the first that fails aborts rank 0's communicator,
// so rank 0 never waits on a dead child. Whatever still runs when the
// LocalRanks is destroyed is killed and reaped; when rank 0 is killed
// outright, its workers get SIGTERM (see started_as_local_rank()).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "transport/communicator.h"

namespace tandem::launcher {

// Set in the environment of the processes LocalRanks starts.
inline constexpr char kLocalRankVar[] = "TANDEM_LOCAL_RANK_OF";

// True in a process that LocalRanks started. It also arranges for this
// process to receive SIGTERM when rank 0 dies (Linux's parent-death signal),
// so a worker never outlives its rank 0.
bool started_as_local_rank();

// A port that was free a moment ago on 127.0.0.1 (the store binds it with
// SO_REUSEADDR).
absl::StatusOr<uint16_t> free_port();
// 128 random bits in hex: a cluster token for ranks that never leave this box.
std::string random_token();
// "exited with code 3", "was killed by signal 9".
std::string describe_exit(int wait_status);

class LocalRanks {
 public:
  LocalRanks() = default;
  ~LocalRanks();
  LocalRanks(const LocalRanks&) = delete;
  LocalRanks& operator=(const LocalRanks&) = delete;

  // Starts ranks 1..n-1 with `extra_env` added to this process's environment.
  absl::Status spawn(int n, const std::map<std::string, std::string>& extra_env);
  // Rank 0's communicator, aborted when a child fails; nullptr to detach.
  void set_comm(transport::Communicator* comm);
  // The first child failure (a non-zero exit or a signal), if any.
  std::optional<absl::Status> failure();
  // How rank `rank`'s process ended ("exited with code 3"), or nullopt while
  // it runs (or when this process did not start it).
  std::optional<std::string> exit_of(int rank);
  // Waits until every child has exited, or the deadline; then the first
  // failure, if any. Whatever still runs is killed by the destructor.
  absl::Status wait_all(transport::Deadline deadline);

 private:
  struct Child {
    pid_t pid;
    int rank;
    bool running;
    int status;  // waitpid's, once it exited
  };
  void watch();

  std::mutex mu_;
  std::vector<Child> children_;
  transport::Communicator* comm_ = nullptr;
  std::optional<absl::Status> failure_;
  std::atomic<bool> stop_{false};
  std::thread watcher_;
};

}  // namespace tandem::launcher
