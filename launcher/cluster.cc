#include "launcher/cluster.h"

#include <algorithm>
#include <cstdlib>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "launcher/local_ranks.h"
#include "transport/bootstrap/bootstrap.h"
#include "transport/local/local_world.h"
#ifdef TANDEM_HAVE_UCX
#include "transport/ucx/ucx_communicator.h"
#endif
#ifdef TANDEM_HAVE_MPI
#include "transport/mpi/mpi_communicator.h"
#endif

namespace tandem::launcher {

namespace tr = tandem::transport;

struct Cluster::Children {
  LocalRanks ranks;
};

Cluster::Cluster() = default;

Cluster::~Cluster() { leave(); }

tr::Bootstrap* Cluster::bootstrap() const { return static_cast<tr::Bootstrap*>(bootstrap_.get()); }

LocalRanks* Cluster::local_ranks() const {
  return children_ != nullptr ? &children_->ranks : nullptr;
}

void Cluster::leave() {
  if (children_ != nullptr) children_->ranks.set_comm(nullptr);
  // A dead local rank would never reach the barrier.
  const bool child_failed = children_ != nullptr && children_->ranks.failure().has_value();
  if (bootstrap_ != nullptr && comm_ != nullptr && !child_failed) {
    // No rank closes its endpoints while a peer may still use them (UCX then
    // reconnects and logs refused connections). Short: a rank may be dead.
    auto* boot = static_cast<tr::Bootstrap*>(bootstrap_.get());
    boot->barrier(tr::BootstrapClock::now() + std::chrono::seconds(2)).IgnoreError();
  }
  comm_.reset();  // before the bootstrap and the children's reaping
}

void add_cluster_flags(CLI::App& command, ClusterFlags& f, bool with_local_ranks) {
  if (with_local_ranks) {
    command.add_option("--local-ranks", f.local_ranks,
                       "start N ranks on this box: this process is rank 0")
        ->check(CLI::Range(1, 64));
  }
  command.add_option("--transport", f.transport, "auto | local (threads) | ucx | mpi")
      ->check(CLI::IsMember({"auto", "local", "ucx", "mpi"}));
  command.add_flag("--shared-memory", f.shared_memory,
                   "UCX over shared memory between local ranks (UCX 1.13 then cannot report a "
                   "dead peer: it shows as a timeout)");
  command.add_option("--rank", f.rank, "this process's rank (with --world-size and --master)")
      ->check(CLI::Range(0, 65535));
  command.add_option("--world-size", f.world_size, "number of ranks")->check(CLI::Range(1, 65536));
  command.add_option("--master", f.master, "ADDR:PORT of rank 0's rendezvous store");
  command.add_option("--cluster-token-file", f.cluster_token_file,
                     "file holding the cluster's shared secret (or TANDEM_CLUSTER_TOKEN)");
  command.add_option("--rendezvous-timeout", f.rendezvous_timeout_s,
                     "seconds to wait for every rank to join")
      ->check(CLI::Range(1, 3600));
  add_link_check_flags(command, f.link);
}

namespace {

absl::StatusOr<tr::BootstrapConfig> config_from_flags(const ClusterFlags& f) {
  if (f.rank == 0 && f.world_size == 1 && f.master.empty()) {
    tr::BootstrapConfig alone;  // one rank: no rendezvous
    return alone;
  }
  if (f.rank < 0 || f.world_size <= 0 || f.master.empty()) {
    return absl::InvalidArgumentError("--rank, --world-size and --master go together");
  }
  if (f.rank >= f.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rank ", f.rank, " is not below --world-size ", f.world_size));
  }
  tr::BootstrapConfig c;
  c.rank = f.rank;
  c.world_size = f.world_size;
  const size_t colon = f.master.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(f.master.substr(colon + 1), &port) || port == 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--master ", f.master, ": expected ADDR:PORT with a port in 1..65535"));
  }
  c.master_addr = f.master.substr(0, colon);
  c.master_port = static_cast<uint16_t>(port);
  if (!f.cluster_token_file.empty()) {
    TANDEM_ASSIGN_OR_RETURN(c.token, tr::read_token_file(f.cluster_token_file));
  } else if (const char* t = std::getenv("TANDEM_CLUSTER_TOKEN"); t != nullptr && *t != '\0') {
    c.token = t;
  } else {
    return absl::InvalidArgumentError(
        "a cluster of several hosts needs a shared token: --cluster-token-file or "
        "TANDEM_CLUSTER_TOKEN");
  }
  return c;
}

bool environment_names_a_cluster() {
  const char* size = std::getenv("TANDEM_WORLD_SIZE");
  return size != nullptr && std::getenv("TANDEM_RANK") != nullptr;
}

// Every rank of a joined cluster checks its links, rank 0 leading.
absl::Status check_cluster_links(Cluster& c, const ClusterFlags& f,
                                 std::vector<tr::LinkMeasurement>& links,
                                 std::chrono::milliseconds timeout) {
  if (c.comm() == nullptr || c.size() < 2) return absl::OkStatus();
  TANDEM_ASSIGN_OR_RETURN(links, check_links(*c.comm(), f.link, timeout));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Cluster>> Cluster::Join(
    const ClusterFlags& f, int default_ranks, const std::map<std::string, std::string>& child_env) {
  TANDEM_RETURN_IF_ERROR(min_link_gbps(f.link).status());
  std::unique_ptr<Cluster> c(new Cluster());
  const auto timeout = std::chrono::milliseconds(int64_t{1000} * f.rendezvous_timeout_s);
  const bool local_child = started_as_local_rank();
  const bool explicit_rank = f.rank >= 0 || f.world_size > 0 || !f.master.empty();
  bool by_mpirun = false;
#ifdef TANDEM_HAVE_MPI
  by_mpirun = tr::launched_by_mpirun();
#endif
  const int local_ranks = f.local_ranks > 0 ? f.local_ranks : default_ranks;
  if (f.local_ranks > 0 && explicit_rank && !local_child) {
    return absl::InvalidArgumentError(
        "--local-ranks starts the whole cluster on this box: drop --rank, --world-size and "
        "--master");
  }

  // MPI: its own launcher, its own transport.
  if (by_mpirun && !local_child && !explicit_rank && (f.transport == "auto" || f.transport == "mpi")) {
#ifdef TANDEM_HAVE_MPI
    TANDEM_ASSIGN_OR_RETURN(c->comm_, tr::make_mpi_communicator());
    c->rank_ = c->comm_->rank();
    c->size_ = c->comm_->size();
    c->description_ = absl::StrCat(c->size_, " ranks over mpi, started by mpirun");
    if (const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE")) {
      c->ranks_on_this_box_ = std::max(1, std::atoi(local));
    }
    c->launch_ = "mpirun";
    TANDEM_RETURN_IF_ERROR(check_cluster_links(*c, f, c->links_, timeout));
    return c;
#endif
  }
  if (f.transport == "mpi") {
    return absl::InvalidArgumentError("--transport mpi needs a start by mpirun");
  }
  if (f.transport == "local") {
    if (local_child || explicit_rank || by_mpirun) {
      return absl::InvalidArgumentError("--transport local runs every rank in this one process");
    }
    const int n = std::max(1, local_ranks);
    c->thread_ranks_ = tr::make_local_world(n);
    c->comm_ = std::move(c->thread_ranks_.front());
    c->thread_ranks_.erase(c->thread_ranks_.begin());
    c->size_ = n;
    c->ranks_on_this_box_ = n;
    c->description_ = absl::StrCat(n, " ranks as threads of this process (local transport)");
    c->launch_ = "local-ranks";  // threads: nothing to measure between them
    return c;
  }

  tr::BootstrapConfig config;
  std::string how;
  if (local_child || (!explicit_rank && (environment_names_a_cluster() || by_mpirun))) {
    TANDEM_ASSIGN_OR_RETURN(config, tr::config_from_env());
    how = local_child ? "started on this box" : "ranks from the environment";
    c->launch_ = local_child                                       ? "local-ranks"
                 : std::getenv("TANDEM_RANK") == nullptr && by_mpirun ? "mpirun"
                                                                      : "env";
  } else if (explicit_rank) {
    TANDEM_ASSIGN_OR_RETURN(config, config_from_flags(f));
    how = "ranks from the command line";
    c->launch_ = "env";
  } else if (local_ranks > 1) {
    config.rank = 0;
    config.world_size = local_ranks;
    config.master_addr = "127.0.0.1";
    config.master_port = 0;
    config.token = random_token();
    c->children_ = std::make_unique<Children>();
    Children* children = c->children_.get();
    const std::string token = config.token;
    config.on_listening = [children, local_ranks, token, timeout, child_env](uint16_t port) {
      std::map<std::string, std::string> env = child_env;
      env["TANDEM_WORLD_SIZE"] = std::to_string(local_ranks);
      env["TANDEM_MASTER_ADDR"] = "127.0.0.1";
      env["TANDEM_MASTER_PORT"] = std::to_string(port);
      env["TANDEM_CLUSTER_TOKEN"] = token;
      // stdout is rank 0's output; UCX logs to it by default.
      env["UCX_LOG_FILE"] = std::getenv("UCX_LOG_FILE") ? std::getenv("UCX_LOG_FILE") : "stderr";
      env["TANDEM_BOOTSTRAP_TIMEOUT_MS"] = std::to_string(timeout.count());
      return children->ranks.spawn(local_ranks, env);
    };
    how = "started on this box";
    c->launch_ = "local-ranks";
  } else {
    return c;  // one rank alone
  }
  if (config.world_size == 1) {
    c->launch_ = "single";
    return c;
  }
  config.timeout = timeout;
#ifdef TANDEM_HAVE_UCX
  TANDEM_ASSIGN_OR_RETURN(auto boot, tr::Bootstrap::create(config));
  tr::UcxOptions options;
  options.setup_timeout = timeout;
  options.peer_failure_detection = !f.shared_memory;
  TANDEM_ASSIGN_OR_RETURN(c->comm_, tr::make_ucx_communicator(*boot, options));
  c->bootstrap_ = std::shared_ptr<void>(boot.release(), [](void* p) {
    delete static_cast<tr::Bootstrap*>(p);
  });
  if (c->children_ != nullptr) c->children_->ranks.set_comm(c->comm_.get());
  c->rank_ = config.rank;
  c->size_ = config.world_size;
  // Ranks started here (or their siblings) share this box; others say so.
  if (local_child || c->children_ != nullptr) {
    c->ranks_on_this_box_ = config.world_size;
  } else if (const char* local = std::getenv("TANDEM_LOCAL_WORLD_SIZE")) {
    c->ranks_on_this_box_ = std::max(1, std::atoi(local));
  } else if (const char* ompi = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE")) {
    c->ranks_on_this_box_ = std::max(1, std::atoi(ompi));
  }
  c->description_ = absl::StrCat(c->size_, " ranks over ucx", f.shared_memory ? " (shared memory)" : "",
                                 ", ", how);
  TANDEM_RETURN_IF_ERROR(check_cluster_links(*c, f, c->links_, timeout));
  return c;
#else
  return absl::UnimplementedError("this build has no UCX transport");
#endif
}

absl::Status Cluster::wait_workers(std::chrono::milliseconds timeout) {
  leave();
  if (children_ == nullptr) return absl::OkStatus();
  return children_->ranks.wait_all(tr::deadline_in(timeout));
}

}  // namespace tandem::launcher
