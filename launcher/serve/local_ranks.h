// `tandem serve --local-ranks N`: rank 0 starts ranks 1..N-1 as copies of its
// own binary and arguments, with the TANDEM_* rendezvous environment, and
// watches them. Destruction kills and reaps whatever still runs, so rank 0
// never leaves a worker behind when it exits; when rank 0 is killed outright,
// the workers notice through the bootstrap store and exit on their own.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"

namespace tandem::launcher::serve {

// Set in the environment of the ranks that --local-ranks starts, so that they
// join the rendezvous instead of forking again.
inline constexpr char kLocalChildVar[] = "TANDEM_SERVE_LOCAL_CHILD";

class LocalRanks {
 public:
  LocalRanks() = default;
  ~LocalRanks();
  LocalRanks(const LocalRanks&) = delete;
  LocalRanks& operator=(const LocalRanks&) = delete;

  // Starts ranks 1..world_size-1 with this process's environment plus `env`.
  absl::Status spawn(int world_size, const std::map<std::string, std::string>& env);

  // How a rank's process ended ("exited with code 3"), or nullopt while it runs.
  std::optional<std::string> exit_of(int rank);
  // The first rank that ended other than with code 0, described.
  std::optional<std::string> first_failure();
  pid_t pid_of(int rank);

  // Waits until every child has exited or `timeout` passed; then SIGKILLs the
  // rest. OK when all exited with code 0 in time.
  absl::Status wait_all(std::chrono::milliseconds timeout);

 private:
  struct Child {
    pid_t pid = -1;
    int rank = 0;
    bool running = true;
    int status = 0;
  };
  void watch();
  void reap_locked();

  std::mutex mu_;
  std::vector<Child> children_;
  std::atomic<bool> stop_{false};
  std::thread watcher_;
};

}  // namespace tandem::launcher::serve
