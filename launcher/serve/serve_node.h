// Rank 0 of a serving cluster: owns the engine and its scheduler, the
// cluster's state (loading, serving, draining, stopping, failed) and the
// transitions that the health service mirrors. The gRPC services reach it
// through ServeBackend; `tandem serve` drives its life: load(), then
// wait_for_stop(), then stop().
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <shared_mutex>
#include <string>
#include <vector>

#include "launcher/serve/cluster.h"
#include "launcher/serve/serve_backend.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/model_runner.h"
#include "runtime/engine/scheduler.h"

namespace tandem::launcher::serve {

struct ServeOptions {
  engine::EngineOptions engine;  // max_sequences is the concurrent-request limit
  double drain_timeout_seconds = 30;
  std::chrono::milliseconds load_timeout{600000};
  int world_size = 1;             // until set_cluster()
  std::string launch = "single";  // Layout.launch, until set_cluster()
};

class ServeNode final : public ServeBackend {
 public:
  // `on_serving` is told every change of whether the node takes requests
  // (the health service's status); it may be set after construction, before
  // the first change.
  explicit ServeNode(ServeOptions options);
  ~ServeNode() override;

  void set_on_serving(std::function<void(bool)> on_serving) { on_serving_ = std::move(on_serving); }
  // The rendezvous comes after the API server is up (so that health can be
  // probed while ranks join): the monitor arrives then, before load(). It
  // must outlive the node.
  void set_monitor(ClusterMonitor* monitor);
  // Once the cluster is joined (after the API server is up): its size, how
  // its ranks were started (Layout.launch) and the links rank 0 measured.
  void set_cluster(int world_size, const std::string& launch, std::vector<v1::LinkStatus> links);

  // Loads the model with `engine_options` (this rank's communicator and the
  // layout filled in; a progress display), waits until every rank has
  // loaded, and starts serving.
  absl::Status load(const engine::EngineOptions& engine_options);

  struct StopCause {
    absl::Status failure;  // OK for an orderly shutdown
    double drain_timeout_seconds = 0;
  };
  // Blocks until a shutdown is requested or a rank fails.
  StopCause wait_for_stop();
  // Drains for at most `drain_timeout_seconds`, ends what still runs, and
  // stops the scheduler. After a failure, ends everything at once.
  void stop(const StopCause& cause);
  // Destroys the scheduler and the engine, which lets the workers' engines
  // return from run_worker(). The API may stay up: its calls meanwhile get
  // UNAVAILABLE.
  void close_engine();
  // After a rank was lost and the engine closed: back to LOADING for the
  // cluster that `tandem serve` joins anew. GetStatus counts the restart and
  // keeps the failure that caused it.
  void begin_restart();
  bool shutdown_requested() const;

  // ServeBackend.
  absl::StatusOr<std::shared_ptr<engine::RequestStream>> generate(
      const v1::GenerateRequest& request, engine::SchedulerClock::time_point deadline,
      uint64_t* seed) override;
  absl::StatusOr<v1::TokenizeResponse> tokenize(const v1::TokenizeRequest& request) override;
  absl::StatusOr<v1::ModelInfo> model_info() override;
  v1::ClusterStatus status() override;
  v1::DrainResponse drain(engine::SchedulerClock::time_point until) override;
  void request_shutdown(double drain_timeout_seconds) override;

 private:
  void set_state(v1::ServingState state);
  // UNAVAILABLE saying why requests are not taken now; OK while serving.
  absl::Status not_serving_reason() const;

  const ServeOptions options_;
  ClusterMonitor* monitor_ = nullptr;  // guarded by mu_
  int world_size_;                     // guarded by mu_
  std::string launch_;                 // guarded by mu_
  std::vector<v1::LinkStatus> links_;  // guarded by mu_
  std::function<void(bool)> on_serving_;
  const Clock::time_point started_;

  // The gRPC threads use engine_, runner_ and scheduler_ under a shared lock;
  // load() and close_engine() swap them under the exclusive one. All three
  // are null while no model is loaded.
  mutable std::shared_mutex engine_mu_;
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<engine::ModelRunner> runner_;
  std::unique_ptr<engine::Scheduler> scheduler_;
  std::string model_name_;
  // Counters of the engines closed before this one (restarts).
  uint64_t earlier_requests_ = 0;  // guarded by engine_mu_
  uint64_t earlier_tokens_ = 0;    // guarded by engine_mu_

  mutable std::mutex mu_;
  std::condition_variable cv_;
  v1::ServingState state_ = v1::SERVING_STATE_LOADING;
  std::optional<double> shutdown_requested_;  // its drain timeout
  absl::Status failure_;
  int restarts_ = 0;           // guarded by mu_
  absl::Status last_failure_;  // the cause of the latest restart; guarded by mu_
  std::mt19937_64 seeds_;
};

}  // namespace tandem::launcher::serve
