// tandem serve: rank 0 serves the gRPC API (InferenceService, ClusterService,
// grpc.health.v1, reflection) for a model split over every rank of the
// cluster (tensor parallel by default); every other rank serves its shard
// from Engine::run_worker(), with a heartbeat beside it. Ranks come from --local-ranks
// (forked here), --rank/--world-size/--master, the TANDEM_* environment, or
// mpirun's. SIGTERM drains and stops the whole cluster with exit code 0.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "launcher/commands.h"
#include "launcher/kv_type_flag.h"
#include "launcher/serve/cluster.h"
#include "launcher/serve/grpc_server.h"
#include "launcher/serve/local_ranks.h"
#include "launcher/serve/security.h"
#include "launcher/serve/serve_node.h"
#include "runtime/engine/engine.h"
#include "runtime/testing/test_model.h"
#include "transport/bootstrap/config.h"
#include "transport/communicator.h"
#ifdef TANDEM_HAVE_UCX
#include "transport/ucx/ucx_communicator.h"
#endif

namespace tandem::launcher {
namespace {

namespace tr = tandem::transport;
using serve::Clock;

struct ServeFlags {
  serve::ServeOptions serve;
  serve::SecurityFlags security{.listen = "127.0.0.1:50051"};
  int local_ranks = 0;
  int rank = -1;
  int world_size = 0;
  std::string master;
  std::string cluster_token_file;
  double load_timeout_s = 600;
  double heartbeat_timeout_s = 5;
};

// The demo model that `tandem serve` makes when no --model is given: the one
// scripts/demo.sh makes (random weights, a real BPE tokenizer).
absl::StatusOr<std::string> ensure_demo_model() {
  const char* tmp = std::getenv("TMPDIR");
  const std::filesystem::path path =
      std::filesystem::path(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") /
      "tandem-demo-small-q8_0-bpe-seed7.gguf";
  if (std::filesystem::exists(path)) return path.string();
  std::fprintf(stderr, "tandem serve: no --model: making the demo model %s (random weights)\n",
               path.c_str());
  testing::TestModelSpec spec;
  spec.shape = "small";
  spec.type = DType::kQ8_0;
  spec.vocab = "bpe";
  spec.seed = 7;
  // Written beside and renamed, so that no rank ever sees half a file.
  const std::string partial = absl::StrCat(path.string(), ".", ::getpid(), ".part");
  TANDEM_RETURN_IF_ERROR(testing::write_test_model(partial, spec));
  std::error_code ec;
  std::filesystem::rename(partial, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot rename ", partial, ": ", ec.message()));
  return path.string();
}

std::string random_token() {
  std::random_device rd;
  std::string t;
  for (int i = 0; i < 4; ++i) absl::StrAppend(&t, absl::Hex(rd(), absl::kZeroPad8));
  return t;
}

absl::StatusOr<uint16_t> free_port() {
  TANDEM_ASSIGN_OR_RETURN(tr::Fd fd, tr::tcp_listen("127.0.0.1", 0));
  return tr::local_port(fd.get());
}

// The engine's links between the ranks, set up through the rendezvous store.
absl::StatusOr<std::unique_ptr<tr::Communicator>> make_communicator(
    tr::Bootstrap& boot, std::chrono::milliseconds timeout) {
#ifdef TANDEM_HAVE_UCX
  tr::UcxOptions options;
  options.setup_timeout = timeout;
  options.peer_failure_detection = true;
  return tr::make_ucx_communicator(boot, options);
#else
  (void)boot;
  (void)timeout;
  return absl::UnimplementedError(
      "serving across ranks needs the UCX transport, which this build does not have");
#endif
}

// The engine options every rank loads with: its communicator and the layout
// (tensor parallelism over every rank unless --tp/--pp say otherwise).
engine::EngineOptions engine_options(const ServeFlags& f, const std::string& launch, int world,
                                     tr::Communicator* comm) {
  engine::EngineOptions o = f.serve.engine;
  o.comm = comm;
  if (world > 1 && o.tp * o.pp == 1) o.tp = world;
  // The ranks that share this box's memory (the engine refuses to load past
  // this rank's share): all of them when forked here, else as the launcher says.
  if (launch == "local-ranks") {
    o.ranks_on_this_box = world;
  } else if (const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE")) {
    o.ranks_on_this_box = std::max(1, std::atoi(local));
  } else if (const char* local_size = std::getenv("TANDEM_LOCAL_WORLD_SIZE")) {
    o.ranks_on_this_box = std::max(1, std::atoi(local_size));
  }
  o.load_timeout = std::chrono::milliseconds(static_cast<int64_t>(f.load_timeout_s * 1000));
  return o;
}

// Where this process stands in the cluster.
struct Placement {
  tr::BootstrapConfig config;  // world_size 1: no rendezvous
  std::string launch;
};

absl::StatusOr<Placement> resolve_placement(const ServeFlags& f) {
  const bool explicit_rank = f.rank >= 0 || f.world_size > 0 || !f.master.empty();
  Placement p;
  // Flags win over the environment: they become the TANDEM_* variables that
  // config_from_env reads.
  std::map<std::string, std::string> overlay;
  if (!f.cluster_token_file.empty()) overlay["TANDEM_CLUSTER_TOKEN_FILE"] = f.cluster_token_file;
  if (std::getenv(serve::kLocalChildVar) != nullptr) {
    p.launch = "local-ranks";
  } else if (f.local_ranks > 0) {
    if (explicit_rank) {
      return absl::InvalidArgumentError(
          "--local-ranks starts the whole cluster on this box: drop --rank, --world-size and "
          "--master");
    }
    p.launch = f.local_ranks > 1 ? "local-ranks" : "single";
    p.config.world_size = f.local_ranks;
    return p;
  } else if (explicit_rank) {
    if (f.rank < 0 || f.world_size <= 0) {
      return absl::InvalidArgumentError("--rank and --world-size go together");
    }
    if (f.world_size > 1 && f.master.empty()) {
      return absl::InvalidArgumentError("--master ADDR:PORT (rank 0's rendezvous) is needed "
                                        "when --world-size is more than 1");
    }
    overlay["TANDEM_RANK"] = std::to_string(f.rank);
    overlay["TANDEM_WORLD_SIZE"] = std::to_string(f.world_size);
    if (!f.master.empty()) {
      TANDEM_ASSIGN_OR_RETURN(serve::ListenAddress m, serve::parse_host_port("--master", f.master));
      overlay["TANDEM_MASTER_ADDR"] = m.host;
      overlay["TANDEM_MASTER_PORT"] = std::to_string(m.port);
    }
    p.launch = "env";
  } else if (std::getenv("TANDEM_RANK") != nullptr ||
             std::getenv("OMPI_COMM_WORLD_RANK") != nullptr || std::getenv("PMI_RANK") != nullptr) {
    p.launch = std::getenv("TANDEM_RANK") == nullptr ? "mpirun" : "env";
  } else if (const int layout = f.serve.engine.tp * f.serve.engine.pp; layout > 1) {
    // --tp/--pp alone: start that many ranks on this box, as generate does.
    p.launch = "local-ranks";
    p.config.world_size = layout;
    return p;
  } else {
    p.launch = "single";
    return p;
  }
  TANDEM_ASSIGN_OR_RETURN(p.config, tr::config_from_env([&](const char* name) -> const char* {
                            const auto it = overlay.find(name);
                            return it != overlay.end() ? it->second.c_str() : std::getenv(name);
                          }));
  return p;
}

// Turns SIGTERM and SIGINT into a drain request. The signals are blocked in
// every thread (set before any is created) and taken here with sigtimedwait.
class SignalWatcher {
 public:
  static void block() {
    sigset_t set = signals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
  }
  explicit SignalWatcher(std::function<void(int)> on_signal)
      : thread_([this, on = std::move(on_signal)] {
          const sigset_t set = signals();
          const timespec tick{0, 100 * 1000 * 1000};
          while (!stop_) {
            const int sig = sigtimedwait(&set, nullptr, &tick);
            if (sig > 0) on(sig);
          }
        }) {}
  ~SignalWatcher() {
    stop_ = true;
    thread_.join();
  }

 private:
  static sigset_t signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    return set;
  }
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

int run_worker_rank(const Placement& p, const ServeFlags& f) {
  const std::string who = absl::StrCat("serve (rank ", p.config.rank, ")");
  // Workers ignore SIGTERM/SIGINT (left blocked): mpirun and a terminal's
  // Ctrl-C signal every rank, and a worker must stay until rank 0 has drained
  // and tells it to go. It still leaves when rank 0 disappears.
  auto boot = tr::Bootstrap::create(p.config);
  if (!boot.ok()) return report_error(who, boot.status());
  serve::WorkerOptions options;
  options.heartbeat = std::chrono::milliseconds(
      std::max<int64_t>(100, static_cast<int64_t>(f.heartbeat_timeout_s * 1000 / 5)));
  serve::WorkerHeartbeat heartbeat(**boot, options);
  auto comm = make_communicator(**boot, p.config.timeout);
  if (!comm.ok()) {
    heartbeat.set_health(v1::RANK_HEALTH_FAILED, std::string(comm.status().message()));
    return report_error(who, comm.status());
  }
  absl::Status s;
  {
    auto loaded =
        engine::Engine::Load(engine_options(f, p.launch, p.config.world_size, comm->get()));
    if (!loaded.ok()) {
      heartbeat.set_health(v1::RANK_HEALTH_FAILED, std::string(loaded.status().message()));
      s = loaded.status();
    } else {
      heartbeat.set_health(v1::RANK_HEALTH_HEALTHY);
      // Takes part in every step rank 0 drives; returns when rank 0 closes
      // its engine, or when the heartbeat finds rank 0 gone.
      s = (*loaded)->run_worker(heartbeat.lost_flag());
    }
  }
  if (absl::Status lost = heartbeat.lost_status(); !lost.ok()) return report_error(who, lost);
  if (!s.ok()) return report_error(who, s);
  s = heartbeat.finish(Clock::now() + std::chrono::seconds(10));
  if (!s.ok()) return report_error(who, s);
  return 0;
}

int run_rank0(const Placement& p, ServeFlags& f) {
  const int world = p.config.world_size;
  serve::ServeOptions options = f.serve;
  options.world_size = world;
  options.launch = p.launch;
  options.load_timeout = std::chrono::milliseconds(static_cast<int64_t>(f.load_timeout_s * 1000));
  serve::ServeNode node(options);
  SignalWatcher signals([&](int sig) {
    std::fprintf(stderr, "tandem serve: %s: draining (at most %.0f s), then stopping\n",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT", f.serve.drain_timeout_seconds);
    node.request_shutdown(0);
  });

  // The API first, NOT_SERVING, so that orchestrators can probe health while
  // the ranks join and load.
  auto api = serve::ApiServer::start({f.security}, node);
  if (!api.ok()) return report_error("serve", api.status());
  node.set_on_serving([server = api->get()](bool serving) { server->set_serving(serving); });
  const std::string address = absl::StrCat(
      serve::parse_host_port("--listen", f.security.listen)->host, ":", (*api)->port());
  std::fprintf(stderr, "tandem serve: listening on %s (health NOT_SERVING until loaded)\n",
               address.c_str());

  serve::LocalRanks children;
  tr::BootstrapConfig config = p.config;
  if (p.launch == "local-ranks" && world > 1) {
    auto port = free_port();
    if (!port.ok()) return report_error("serve", port.status());
    config.master_addr = "127.0.0.1";
    config.master_port = *port;
    config.token = random_token();
    // The rendezvous alone: a worker whose rank 0 died before it joined gives up after this.
    config.timeout =
        std::min(std::chrono::milliseconds(60000),
                 std::chrono::milliseconds(static_cast<int64_t>(f.load_timeout_s * 1000)));
    if (absl::Status s = children.spawn(
            world, {{"TANDEM_WORLD_SIZE", std::to_string(world)},
                    {"TANDEM_MASTER_ADDR", "127.0.0.1"},
                    {"TANDEM_MASTER_PORT", std::to_string(config.master_port)},
                    {"TANDEM_CLUSTER_TOKEN", config.token},
                    {"TANDEM_BOOTSTRAP_TIMEOUT_MS", std::to_string(config.timeout.count())},
                    {"TANDEM_SERVE_MODEL", f.serve.engine.model_path}});
        !s.ok()) {
      return report_error("serve", s);
    }
  }
  std::unique_ptr<tr::Bootstrap> boot;
  std::unique_ptr<tr::Communicator> comm;
  if (world > 1) {
    std::fprintf(stderr, "tandem serve: waiting for %d ranks (%s)\n", world, p.launch.c_str());
    auto created = tr::Bootstrap::create(config);
    if (!created.ok()) return report_error("serve", created.status());
    boot = std::move(*created);
    auto linked = make_communicator(*boot, config.timeout);
    if (!linked.ok()) return report_error("serve", linked.status());
    comm = std::move(*linked);
  }
  serve::ClusterMonitor monitor(
      boot.get(), world, world > 1 && p.launch == "local-ranks" ? &children : nullptr,
      std::chrono::milliseconds(static_cast<int64_t>(f.heartbeat_timeout_s * 1000)));
  monitor.set_comm(comm.get());
  node.set_monitor(&monitor);

  // Test hook: holds rank 0 in LOADING a while, so that tests can watch the
  // health service go from NOT_SERVING to SERVING. Bounded to a minute.
  if (const char* delay = std::getenv("TANDEM_SERVE_TEST_LOAD_DELAY_MS")) {
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::clamp(std::atol(delay), 0L, 60000L)));
  }
  serve::ServeNode::StopCause cause;
  if (absl::Status s = node.load(engine_options(f, p.launch, world, comm.get())); !s.ok()) {
    cause.failure = s;
  } else {
    std::fprintf(stderr, "tandem serve: serving %s on %s (%d rank%s, %d sequences at once)\n",
                 f.serve.engine.model_path.c_str(), address.c_str(), world,
                 world == 1 ? "" : "s", f.serve.engine.max_sequences);
    cause = node.wait_for_stop();
  }
  node.stop(cause);
  (*api)->shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  node.close_engine();  // the workers' engines leave run_worker()
  const auto closing = std::chrono::seconds(10);
  absl::Status workers = monitor.stop_workers(
      cause.failure.ok() ? "rank 0 is shutting down" : "rank 0 failed", Clock::now() + closing);
  absl::Status reaped = absl::OkStatus();
  if (p.launch == "local-ranks" && world > 1) reaped = children.wait_all(closing);
  if (!cause.failure.ok()) return report_error("serve", cause.failure);
  if (!workers.ok()) return report_error("serve", workers);
  if (!reaped.ok()) return report_error("serve", reaped);
  std::fprintf(stderr, "tandem serve: stopped\n");
  return 0;
}

int run_serve(ServeFlags& f) {
  SignalWatcher::block();
  auto placement = resolve_placement(f);
  if (!placement.ok()) return report_error("serve", placement.status());
  if (placement->config.rank == 0) {
    if (absl::Status s = serve::check_security(f.security); !s.ok()) {
      return report_error("serve", s);
    }
  }
  if (f.serve.engine.model_path.empty()) {
    // A forked rank gets the path its rank 0 resolved.
    const char* given = std::getenv("TANDEM_SERVE_MODEL");
    if (given != nullptr && *given != '\0' && std::getenv(serve::kLocalChildVar) != nullptr) {
      f.serve.engine.model_path = given;
    } else {
      auto demo = ensure_demo_model();
      if (!demo.ok()) return report_error("serve", demo.status());
      f.serve.engine.model_path = *demo;
    }
  }
  if (placement->config.rank != 0) return run_worker_rank(*placement, f);
  return run_rank0(*placement, f);
}

}  // namespace

void add_serve_command(CLI::App& app, int* exit_code) {
  auto f = std::make_shared<ServeFlags>();
  f->serve.engine.max_sequences = 4;
  CLI::App* cmd =
      app.add_subcommand("serve", "Serve a model over gRPC (rank 0) across the cluster");
  cmd->add_option("--model", f->serve.engine.model_path,
                  "GGUF model file (default: a demo model with random weights)");
  cmd->add_option("--listen", f->security.listen, "Address of the gRPC API (rank 0)")
      ->capture_default_str();
  cmd->add_option("--local-ranks", f->local_ranks,
                  "Start N ranks on this box (forks N-1 workers; default: tp x pp)")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--rank", f->rank, "This process's rank (with --world-size and --master)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--world-size", f->world_size, "Ranks in the cluster")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--master", f->master, "Rank 0's rendezvous address ADDR:PORT");
  cmd->add_option("--cluster-token-file", f->cluster_token_file,
                  "The cluster token shared by every rank (or TANDEM_CLUSTER_TOKEN[_FILE])");
  cmd->add_option("--auth-token-file", f->security.auth_token_file,
                  "Bearer token that API clients must send (needed off loopback)");
  cmd->add_option("--tls-cert", f->security.tls_cert, "Server certificate (PEM) for TLS");
  cmd->add_option("--tls-key", f->security.tls_key, "Server private key (PEM) for TLS");
  cmd->add_option("--tls-ca", f->security.tls_ca,
                  "CA (PEM) that client certificates must chain to (mTLS)");
  cmd->add_option("--max-sequences", f->serve.engine.max_sequences, "Requests generating at once")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  cmd->add_option("--threads", f->serve.engine.n_threads, "Threads (default: one per core)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--context", f->serve.engine.context_length,
                  "Context length (default: the model's)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--tp", f->serve.engine.tp,
                  "Tensor-parallel ranks (default: every rank, when --pp is not given)")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--pp", f->serve.engine.pp, "Pipeline stages")->check(CLI::Range(1, 64));
  cmd->add_option("--batch", f->serve.engine.max_batch_tokens, "Largest forward batch in tokens")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--mmap", f->serve.engine.use_mmap, "Map the model file instead of reading it");
  add_kv_type_option(*cmd, &f->serve.engine.kv_type);
  cmd->add_option("--drain-timeout", f->serve.drain_timeout_seconds,
                  "Seconds SIGTERM waits for requests in flight")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  cmd->add_option("--load-timeout", f->load_timeout_s, "Seconds for every rank to join and load")
      ->check(CLI::Range(1.0, 86400.0))
      ->capture_default_str();
  cmd->add_option("--heartbeat-timeout", f->heartbeat_timeout_s,
                  "Seconds of worker silence before rank 0 declares it lost")
      ->check(CLI::Range(0.5, 600.0))
      ->capture_default_str();
  cmd->callback([f, exit_code] { *exit_code = run_serve(*f); });
}

}  // namespace tandem::launcher
