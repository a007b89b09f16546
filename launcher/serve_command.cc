// tandem serve: rank 0 serves the gRPC API (InferenceService, ClusterService,
// grpc.health.v1, reflection) for a model split over every rank of the
// cluster (tensor parallel by default); every other rank serves its shard
// from Engine::run_worker(), with a heartbeat beside it. Ranks join through
// launcher/cluster.h, as generate's do: --local-ranks (started here),
// --rank/--world-size/--master, the TANDEM_* environment, or mpirun's; the
// links are checked before the model loads. SIGTERM drains and stops the
// whole cluster with exit code 0. A rank lost while serving fails the
// requests in flight, and rank 0 joins and loads the cluster anew: it starts
// local ranks again itself, and waits for remote ones that their supervisor
// restarts (--max-restarts bounds it; under mpirun the service stops).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "launcher/cluster.h"
#include "launcher/auto_layout.h"
#include "launcher/commands.h"
#include "launcher/kv_type_flag.h"
#include "launcher/local_ranks.h"
#include "launcher/serve/cluster.h"
#include "launcher/serve/grpc_server.h"
#include "launcher/serve/security.h"
#include "launcher/serve/serve_node.h"
#include "runtime/engine/engine.h"
#include "runtime/testing/test_model.h"
#include "transport/link_probe.h"

namespace tandem::launcher {
namespace {

namespace tr = tandem::transport;
using serve::Clock;

struct ServeFlags {
  serve::ServeOptions serve;
  serve::SecurityFlags security{.listen = "127.0.0.1:50051"};
  ClusterFlags cluster;
  double load_timeout_s = 600;
  double heartbeat_timeout_s = 5;
  int max_restarts = 3;  // in any 10 minutes
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

// The engine options every rank loads with: its communicator and the layout
// (the planner's choice, which rank 0 sends to every rank, unless --tp/--pp
// say otherwise).
absl::StatusOr<engine::EngineOptions> engine_options(const ServeFlags& f, const Cluster& cluster) {
  engine::EngineOptions o = f.serve.engine;
  o.comm = cluster.comm();
  // The ranks that share this box's memory (the engine refuses to load past
  // this rank's share).
  o.ranks_on_this_box = cluster.ranks_on_this_box();
  o.load_timeout = std::chrono::milliseconds(static_cast<int64_t>(f.load_timeout_s * 1000));
  TANDEM_RETURN_IF_ERROR(choose_layout(cluster, o));
  return o;
}

// The rank this process will have, known before it joins (rank 0 opens the
// API first): from --rank, the TANDEM_* environment (which the ranks that
// --local-ranks starts get), or mpirun's.
int expected_rank(const ClusterFlags& f) {
  if (f.rank >= 0) return f.rank;
  for (const char* name : {"TANDEM_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"}) {
    if (const char* v = std::getenv(name); v != nullptr && *v != '\0') return std::atoi(v);
  }
  return 0;
}

std::vector<v1::LinkStatus> link_statuses(const std::vector<tr::LinkMeasurement>& links) {
  std::vector<v1::LinkStatus> out;
  for (const tr::LinkMeasurement& m : links) {
    v1::LinkStatus& l = out.emplace_back();
    l.set_rank_a(m.rank_a);
    l.set_rank_b(m.rank_b);
    l.set_transport(m.backend);
    l.set_path(m.path);
    l.set_latency_us(m.round_trip_us / 2);
    l.set_bandwidth_gbps(m.bandwidth_gbps);
  }
  return out;
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

int run_worker_rank(Cluster& cluster, const ServeFlags& f) {
  const std::string who = absl::StrCat("serve (rank ", cluster.rank(), ")");
  // Workers ignore SIGTERM/SIGINT (left blocked): mpirun and a terminal's
  // Ctrl-C signal every rank, and a worker must stay until rank 0 has drained
  // and tells it to go. It still leaves when rank 0 disappears.
  if (cluster.bootstrap() == nullptr) {
    return report_error(who, absl::InternalError("a serving worker joined without a rendezvous"));
  }
  serve::WorkerOptions options;
  options.heartbeat = std::chrono::milliseconds(
      std::max<int64_t>(100, static_cast<int64_t>(f.heartbeat_timeout_s * 1000 / 5)));
  serve::WorkerHeartbeat heartbeat(*cluster.bootstrap(), options);
  absl::Status s;
  {
    absl::StatusOr<engine::EngineOptions> o = engine_options(f, cluster);
    auto loaded = o.ok() ? engine::Engine::Load(*o) : o.status();
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

// How one life of the cluster ended.
struct ClusterRun {
  serve::ServeNode::StopCause cause;
  bool served = false;       // it reached SERVING before it stopped
  bool restartable = false;  // its workers can join again: ones this rank starts, or
                             // ones a supervisor (systemd, Kubernetes) restarts
  absl::Status teardown;     // how the workers left
};

// Joins the cluster, loads, serves until a shutdown or a lost rank, and takes
// the cluster down again. The API server stays up throughout.
ClusterRun run_cluster(const ServeFlags& f, int default_ranks, serve::ServeNode& node,
                       const std::string& address) {
  ClusterRun run;
  // The ranks it starts get the model path this rank resolved.
  auto joined = Cluster::Join(f.cluster, default_ranks,
                              {{"TANDEM_SERVE_MODEL", f.serve.engine.model_path}});
  if (!joined.ok()) {
    run.cause.failure = joined.status();
    return run;
  }
  Cluster& cluster = **joined;
  const int world = cluster.size();
  if (world > 1) {
    std::fprintf(stderr, "tandem serve: cluster: %s\n", cluster.description().c_str());
  }
  run.restartable = cluster.launch() == "local-ranks" || cluster.launch() == "env";
  node.set_cluster(world, cluster.launch(), link_statuses(cluster.links()));
  serve::ClusterMonitor monitor(
      cluster.bootstrap(), world, cluster.local_ranks(),
      std::chrono::milliseconds(static_cast<int64_t>(f.heartbeat_timeout_s * 1000)));
  monitor.set_comm(cluster.comm());
  node.set_monitor(&monitor);

  // Test hook: holds rank 0 in LOADING a while, so that tests can watch the
  // health service go from NOT_SERVING to SERVING. Bounded to a minute.
  if (const char* delay = std::getenv("TANDEM_SERVE_TEST_LOAD_DELAY_MS")) {
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::clamp(std::atol(delay), 0L, 60000L)));
  }
  absl::StatusOr<engine::EngineOptions> engine = engine_options(f, cluster);
  if (absl::Status s = engine.ok() ? node.load(*engine) : engine.status(); !s.ok()) {
    run.cause.failure = s;
  } else {
    std::fprintf(stderr, "tandem serve: serving %s on %s (%d rank%s, %d sequences at once)\n",
                 f.serve.engine.model_path.c_str(), address.c_str(), world,
                 world == 1 ? "" : "s", f.serve.engine.max_sequences);
    run.served = true;
    run.cause = node.wait_for_stop();
  }
  node.stop(run.cause);
  node.close_engine();  // the workers' engines leave run_worker()
  const auto closing = std::chrono::seconds(10);
  const absl::Status workers = monitor.stop_workers(
      run.cause.failure.ok() ? "rank 0 is shutting down" : "rank 0 failed", Clock::now() + closing);
  node.set_monitor(nullptr);
  const absl::Status reaped = cluster.wait_workers(closing);
  run.teardown = workers.ok() ? reaped : workers;
  return run;
}

// At most `max` restarts in any `window`, so that a rank that dies at every
// start ends the service (and its supervisor's policy takes over) instead
// of looping.
class RestartBudget {
 public:
  RestartBudget(int max, Clock::duration window) : max_(max), window_(window) {}
  bool take() {
    const Clock::time_point now = Clock::now();
    while (!recent_.empty() && now - recent_.front() > window_) recent_.pop_front();
    if (static_cast<int>(recent_.size()) >= max_) return false;
    recent_.push_back(now);
    return true;
  }

 private:
  const int max_;
  const Clock::duration window_;
  std::deque<Clock::time_point> recent_;
};

int run_rank0(ServeFlags& f, int default_ranks) {
  serve::ServeOptions options = f.serve;
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

  // A rank lost while serving: the requests in flight fail with UNAVAILABLE,
  // health goes NOT_SERVING, and the cluster is joined and loaded anew.
  RestartBudget budget(f.max_restarts, std::chrono::minutes(10));
  ClusterRun run;
  while (true) {
    run = run_cluster(f, default_ranks, node, address);
    if (run.cause.failure.ok() || !run.served || !run.restartable || node.shutdown_requested()) {
      break;
    }
    if (!budget.take()) {
      if (f.max_restarts > 0) {
        std::fprintf(stderr, "tandem serve: already %d restarts in 10 minutes (--max-restarts): "
                     "stopping\n", f.max_restarts);
      }
      break;
    }
    std::fprintf(stderr, "tandem serve: %s: restarting the cluster (health NOT_SERVING until "
                 "it has loaded again)\n", std::string(run.cause.failure.message()).c_str());
    node.begin_restart();
  }
  (*api)->shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (!run.cause.failure.ok()) return report_error("serve", run.cause.failure);
  if (!run.teardown.ok()) return report_error("serve", run.teardown);
  std::fprintf(stderr, "tandem serve: stopped\n");
  return 0;
}

int run_serve(ServeFlags& f) {
  SignalWatcher::block();
  // The workers' heartbeat and shutdown go through the rendezvous store,
  // which only the UCX launch has.
  if (f.cluster.transport == "local" || f.cluster.transport == "mpi") {
    return report_error("serve", absl::InvalidArgumentError(absl::StrCat(
                                     "--transport ", f.cluster.transport,
                                     ": serve's ranks talk over ucx (its rendezvous store carries "
                                     "their heartbeats); drop --transport")));
  }
  f.cluster.transport = "ucx";
  const bool rank0 = expected_rank(f.cluster) == 0;
  if (rank0) {
    if (absl::Status s = serve::check_security(f.security); !s.ok()) {
      return report_error("serve", s);
    }
  }
  if (f.serve.engine.model_path.empty()) {
    // A rank that --local-ranks started gets the path its rank 0 resolved.
    const char* given = std::getenv("TANDEM_SERVE_MODEL");
    if (given != nullptr && *given != '\0' && std::getenv(kLocalRankVar) != nullptr) {
      f.serve.engine.model_path = given;
    } else {
      auto demo = ensure_demo_model();
      if (!demo.ok()) return report_error("serve", demo.status());
      f.serve.engine.model_path = *demo;
    }
  }
  // --tp/--pp alone: start that many ranks on this box, as generate does.
  const int layout = f.serve.engine.tp * f.serve.engine.pp;
  const int default_ranks = layout > 1 ? layout : 0;
  if (rank0) return run_rank0(f, default_ranks);
  auto joined = Cluster::Join(f.cluster, default_ranks);
  if (!joined.ok()) {
    return report_error(absl::StrCat("serve (rank ", expected_rank(f.cluster), ")"),
                        joined.status());
  }
  return run_worker_rank(**joined, f);
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
  add_cluster_flags(*cmd, f->cluster);
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
                  "Tensor-parallel ranks (default: the layout the planner chooses)")
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
  cmd->add_option("--max-restarts", f->max_restarts,
                  "Restarts of the cluster after a lost rank, at most, in any 10 minutes "
                  "(0: a lost rank stops the service)")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  cmd->callback([f, exit_code] { *exit_code = run_serve(*f); });
}

}  // namespace tandem::launcher
