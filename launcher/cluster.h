// Where this process sits in a cluster of ranks, and the communicator it
// talks through. The modes, in order of precedence:
// - a worker that `--local-ranks` started on this box, `--rank R --world-size
//   W --master ADDR:PORT`, or the TANDEM_* environment (torchrun style): the
//   rendezvous at rank 0's store, then UCX;
// - started by mpirun: MPI (or UCX with `--transport ucx`, given
//   TANDEM_MASTER_ADDR/PORT);
// - `--local-ranks N`: this process is rank 0 and starts ranks 1..N-1 as
//   processes of this same command (UCX), or as threads (`--transport local`);
// - none of these: one rank alone, no communicator.
// Once joined, and before any model loads, the ranks check their links
// (launcher/link_check.h) unless --skip-link-check.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "launcher/link_check.h"
#include "transport/communicator.h"
#include "transport/link_probe.h"

namespace CLI {
class App;
}

namespace tandem::transport {
class Bootstrap;
}

namespace tandem::launcher {

class LocalRanks;

struct ClusterFlags {
  int local_ranks = 0;             // 0: not given
  std::string transport = "auto";  // auto | local | ucx | mpi
  bool shared_memory = false;      // UCX over shared memory between local ranks
  int rank = -1;
  int world_size = 0;
  std::string master;  // ADDR:PORT of rank 0's rendezvous store
  std::string cluster_token_file;
  int rendezvous_timeout_s = 60;
  LinkCheckFlags link;
};
// `with_local_ranks`: false for commands whose rank count comes from their
// layout alone (or that own a --local-ranks of their own).
void add_cluster_flags(CLI::App& command, ClusterFlags& flags, bool with_local_ranks = true);

class Cluster {
 public:
  // `default_ranks`: the local ranks to start when the command needs several
  // and no launch mode says otherwise (0: one rank).
  // `child_env` goes into the environment of the local ranks it starts.
  static absl::StatusOr<std::unique_ptr<Cluster>> Join(
      const ClusterFlags& flags, int default_ranks = 0,
      const std::map<std::string, std::string>& child_env = {});
  ~Cluster();

  int rank() const { return rank_; }
  int size() const { return size_; }
  // Ranks of this cluster on this box (they share its memory).
  int ranks_on_this_box() const { return ranks_on_this_box_; }
  // This rank's communicator; null for one rank alone.
  transport::Communicator* comm() const { return comm_.get(); }
  // `--transport local`: the communicators of ranks 1..N-1, whose engines
  // the command runs on threads of this process.
  const std::vector<std::unique_ptr<transport::Communicator>>& thread_ranks() const {
    return thread_ranks_;
  }
  // "2 ranks, ucx over tcp, started on this box", for the log.
  const std::string& description() const { return description_; }
  // How the ranks were started: "single", "local-ranks", "mpirun" or "env"
  // (--rank/--world-size/--master or TANDEM_*), as GetStatus's Layout says.
  const std::string& launch() const { return launch_; }
  // The rendezvous store the ranks joined through (it stays up, for a
  // control plane beside the engine's traffic); null without one (one rank,
  // MPI, threads).
  transport::Bootstrap* bootstrap() const;
  // The ranks this process started (`--local-ranks`), or null.
  LocalRanks* local_ranks() const;
  // What rank 0 measured of its links at start-up (empty elsewhere, and when
  // skipped).
  const std::vector<transport::LinkMeasurement>& links() const { return links_; }
  // Leaves the cluster (every rank together, briefly, then the communicator
  // closes), then, on rank 0 with local worker processes, waits for them to
  // exit (OK when all exited 0), killing them at the deadline. Every rank
  // calls it (or the destructor) once its engine is gone.
  absl::Status wait_workers(std::chrono::milliseconds timeout);

 private:
  Cluster();
  void leave();
  struct Children;

  int rank_ = 0;
  int size_ = 1;
  int ranks_on_this_box_ = 1;
  std::string description_ = "one rank";
  std::string launch_ = "single";
  std::vector<transport::LinkMeasurement> links_;
  std::unique_ptr<Children> children_;
  std::shared_ptr<void> bootstrap_;  // kept alive with the communicator
  std::unique_ptr<transport::Communicator> comm_;
  std::vector<std::unique_ptr<transport::Communicator>> thread_ranks_;
};

}  // namespace tandem::launcher
