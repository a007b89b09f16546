#include "launcher/serve/serve_node.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "launcher/load_progress.h"
#include "launcher/serve/request_conversion.h"

namespace tandem::launcher::serve {

ServeNode::ServeNode(ServeOptions options)
    : options_(std::move(options)),
      world_size_(options_.world_size),
      launch_(options_.launch),
      started_(Clock::now()),
      seeds_(std::random_device{}()) {}

void ServeNode::set_monitor(ClusterMonitor* monitor) {
  std::lock_guard<std::mutex> lock(mu_);
  monitor_ = monitor;
}

void ServeNode::set_cluster(int world_size, const std::string& launch,
                            std::vector<v1::LinkStatus> links) {
  std::lock_guard<std::mutex> lock(mu_);
  world_size_ = world_size;
  launch_ = launch;
  links_ = std::move(links);
}

ServeNode::~ServeNode() { close_engine(); }

void ServeNode::close_engine() {
  std::unique_ptr<engine::Engine> engine;
  std::unique_ptr<engine::ModelRunner> runner;
  std::unique_ptr<engine::Scheduler> scheduler;
  {
    std::unique_lock<std::shared_mutex> lock(engine_mu_);
    if (scheduler_) {
      const engine::SchedulerStats stats = scheduler_->stats();
      earlier_requests_ += stats.requests_total;
      earlier_tokens_ += stats.tokens_generated_total;
    }
    engine = std::move(engine_);
    runner = std::move(runner_);
    scheduler = std::move(scheduler_);
  }
  scheduler.reset();  // joins the loop before the engine goes
  runner.reset();
  engine.reset();
}

void ServeNode::begin_restart() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++restarts_;
    last_failure_ = failure_;
    failure_ = absl::OkStatus();
    monitor_ = nullptr;
  }
  set_state(v1::SERVING_STATE_LOADING);
}

bool ServeNode::shutdown_requested() const {
  std::lock_guard<std::mutex> lock(mu_);
  return shutdown_requested_.has_value();
}

absl::Status ServeNode::load(const engine::EngineOptions& engine_options) {
  const std::string& path = engine_options.model_path;
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  absl::StatusOr<std::unique_ptr<engine::Engine>> loaded;
  {
    LoadProgress progress(std::filesystem::path(path).filename().string(), ec ? 0 : size);
    const auto start = Clock::now();
    loaded = engine::Engine::Load(engine_options);
    progress.finish(loaded.ok(), std::chrono::duration<double>(Clock::now() - start).count());
  }
  if (!loaded.ok()) return loaded.status();
  {
    std::unique_lock<std::shared_mutex> lock(engine_mu_);
    engine_ = std::move(*loaded);
    absl::StatusOr<std::string> name = engine_->file().get_string("general.name");
    model_name_ = name.ok() ? *name : std::filesystem::path(path).filename().string();
    runner_ = std::make_unique<engine::EngineRunner>(*engine_, options_.engine.max_sequences);
    scheduler_ = std::make_unique<engine::Scheduler>(*runner_);
  }
  // Every rank must have loaded its part before the first request.
  ClusterMonitor* monitor = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    monitor = monitor_;
  }
  if (monitor != nullptr) {
    TANDEM_RETURN_IF_ERROR(monitor->wait_all_loaded(Clock::now() + options_.load_timeout));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ != v1::SERVING_STATE_LOADING) return absl::OkStatus();  // drained meanwhile
  }
  set_state(v1::SERVING_STATE_SERVING);
  return absl::OkStatus();
}

void ServeNode::set_state(v1::ServingState state) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == state) return;
    state_ = state;
  }
  cv_.notify_all();
  if (on_serving_) on_serving_(state == v1::SERVING_STATE_SERVING);
}

absl::Status ServeNode::not_serving_reason() const {
  std::lock_guard<std::mutex> lock(mu_);
  switch (state_) {
    case v1::SERVING_STATE_SERVING:
      return absl::OkStatus();
    case v1::SERVING_STATE_LOADING:
      return absl::UnavailableError("the model is still loading; retry when health is SERVING");
    case v1::SERVING_STATE_DRAINING:
      return absl::UnavailableError("the server is draining: it takes no new requests");
    case v1::SERVING_STATE_FAILED:
      return absl::UnavailableError(absl::StrCat("the cluster failed: ", failure_.message()));
    default:
      return absl::UnavailableError("the server is shutting down");
  }
}

ServeNode::StopCause ServeNode::wait_for_stop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (shutdown_requested_) return {absl::OkStatus(), *shutdown_requested_};
    ClusterMonitor* monitor = monitor_;
    lock.unlock();
    std::optional<absl::Status> failure =
        monitor != nullptr ? monitor->failure() : std::nullopt;
    lock.lock();
    if (failure) {
      failure_ = *failure;
      return {*failure, 0};
    }
    cv_.wait_for(lock, std::chrono::milliseconds(100));
  }
}

void ServeNode::stop(const StopCause& cause) {
  if (!cause.failure.ok()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      failure_ = cause.failure;
    }
    set_state(v1::SERVING_STATE_FAILED);
    std::shared_lock<std::shared_mutex> lock(engine_mu_);
    if (scheduler_) {
      scheduler_->stop_accepting();
      scheduler_->abort_all(absl::UnavailableError(
          absl::StrCat("the cluster failed: ", cause.failure.message())));
    }
  } else {
    const double seconds = cause.drain_timeout_seconds > 0 ? cause.drain_timeout_seconds
                                                           : options_.drain_timeout_seconds;
    const v1::DrainResponse drained = drain(
        engine::SchedulerClock::now() +
        std::chrono::duration_cast<engine::SchedulerClock::duration>(
            std::chrono::duration<double>(seconds)));
    if (drained.remaining_requests() > 0) {
      std::fprintf(stderr, "tandem serve: %d requests still running after %.1f s of draining: "
                   "ending them\n", drained.remaining_requests(), seconds);
    }
    set_state(v1::SERVING_STATE_STOPPING);
    std::shared_lock<std::shared_mutex> lock(engine_mu_);
    if (scheduler_) {
      scheduler_->abort_all(absl::UnavailableError("the server is shutting down"));
    }
  }
  std::shared_lock<std::shared_mutex> lock(engine_mu_);
  if (scheduler_) {
    scheduler_->wait_idle(engine::SchedulerClock::now() + std::chrono::seconds(5));
  }
}

absl::StatusOr<std::shared_ptr<engine::RequestStream>> ServeNode::generate(
    const v1::GenerateRequest& request, engine::SchedulerClock::time_point deadline,
    uint64_t* seed) {
  TANDEM_RETURN_IF_ERROR(not_serving_reason());
  std::shared_lock<std::shared_mutex> engine_lock(engine_mu_);
  if (!scheduler_) return not_serving_reason();
  uint64_t random_seed = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    random_seed = seeds_() & 0x7fffffff;  // printable as `tandem generate --seed`
  }
  const ModelLimits limits{runner_->n_vocab(), runner_->context_length()};
  TANDEM_ASSIGN_OR_RETURN(engine::SequenceRequest sequence,
                          to_sequence_request(request, engine_->tokenizer(), limits, random_seed));
  sequence.deadline = deadline;
  *seed = sequence.sampling.seed;
  return scheduler_->submit(std::move(sequence));
}

absl::StatusOr<v1::TokenizeResponse> ServeNode::tokenize(const v1::TokenizeRequest& request) {
  std::shared_lock<std::shared_mutex> engine_lock(engine_mu_);
  if (!engine_) return not_serving_reason();
  v1::TokenizeResponse out;
  const std::vector<int32_t> ids = engine_->tokenizer().encode(
      request.text(), {.add_bos = !request.no_bos(), .parse_special = request.parse_special()});
  for (int32_t id : ids) {
    out.add_token_ids(id);
    out.add_pieces(engine_->tokenizer().token_to_piece(id, /*render_special=*/true));
  }
  return out;
}

absl::StatusOr<v1::ModelInfo> ServeNode::model_info() {
  std::shared_lock<std::shared_mutex> engine_lock(engine_mu_);
  if (!engine_) return not_serving_reason();
  const model::LlamaConfig& c = engine_->config();
  v1::ModelInfo info;
  info.set_name(model_name_);
  info.set_path(options_.engine.model_path);
  absl::StatusOr<std::string> arch = engine_->file().get_string("general.architecture");
  info.set_architecture(arch.ok() ? *arch : "llama");
  info.set_n_vocab(static_cast<int32_t>(c.n_vocab));
  info.set_context_length(engine_->context_length());
  info.set_n_layers(static_cast<int32_t>(c.n_layers));
  info.set_dim(static_cast<int32_t>(c.dim));
  info.set_n_heads(static_cast<int32_t>(c.n_heads));
  info.set_n_kv_heads(static_cast<int32_t>(c.n_kv_heads));
  info.set_tokenizer(std::string(engine_->tokenizer().model()));
  info.set_bos_id(engine_->tokenizer().bos_id());
  info.set_eos_id(engine_->tokenizer().eos_id());
  info.set_max_sequences(options_.engine.max_sequences);
  info.set_max_batch_tokens(engine_->max_batch_tokens());
  {
    std::lock_guard<std::mutex> lock(mu_);
    info.set_world_size(world_size_);
  }
  return info;
}

v1::ClusterStatus ServeNode::status() {
  v1::ClusterStatus s;
  bool monitored = false;
  {
    // Under mu_: set_monitor(nullptr) waits for it, so the monitor outlives its use here.
    std::lock_guard<std::mutex> lock(mu_);
    s.set_state(state_);
    if (monitor_ != nullptr) {
      monitored = true;
      for (v1::RankStatus& r : monitor_->ranks()) *s.add_ranks() = std::move(r);
    }
    for (const v1::LinkStatus& link : links_) *s.add_links() = link;
    s.mutable_layout()->set_world_size(world_size_);
    s.mutable_layout()->set_launch(launch_);
    s.set_restarts(restarts_);
    if (!last_failure_.ok()) s.set_last_failure(std::string(last_failure_.message()));
  }
  std::shared_lock<std::shared_mutex> engine_lock(engine_mu_);
  v1::Layout* layout = s.mutable_layout();
  if (engine_) {
    layout->set_tp(engine_->world().tp());
    layout->set_pp(engine_->world().pp());
  } else {
    layout->set_tp(options_.engine.tp);
    layout->set_pp(options_.engine.pp);
  }
  if (!monitored) {
    const v1::RankReport self = describe_this_process(0);
    v1::RankStatus* zero = s.add_ranks();
    zero->set_host(self.host());
    zero->set_pid(self.pid());
    zero->set_health(v1::RANK_HEALTH_HEALTHY);
    zero->set_memory_total_bytes(self.memory_total_bytes());
    zero->set_memory_available_bytes(self.memory_available_bytes());
    zero->set_rss_bytes(self.rss_bytes());
  }
  if (s.ranks_size() > 0 && s.state() == v1::SERVING_STATE_LOADING) {
    s.mutable_ranks(0)->set_health(v1::RANK_HEALTH_LOADING);
  }
  // Counted across restarts: the closed engines' totals plus this one's.
  const engine::SchedulerStats now = scheduler_ ? scheduler_->stats() : engine::SchedulerStats{};
  s.set_active_requests(now.active);
  s.set_requests_total(earlier_requests_ + now.requests_total);
  s.set_tokens_generated_total(earlier_tokens_ + now.tokens_generated_total);
  s.set_max_sequences(options_.engine.max_sequences);
  s.set_uptime_seconds(std::chrono::duration<double>(Clock::now() - started_).count());
  s.set_model_path(options_.engine.model_path);
  return s;
}

v1::DrainResponse ServeNode::drain(engine::SchedulerClock::time_point until) {
  bool can_drain = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    can_drain = state_ == v1::SERVING_STATE_SERVING || state_ == v1::SERVING_STATE_LOADING;
  }
  if (can_drain) set_state(v1::SERVING_STATE_DRAINING);
  v1::DrainResponse out;
  std::shared_lock<std::shared_mutex> engine_lock(engine_mu_);
  if (scheduler_) {
    scheduler_->stop_accepting();
    scheduler_->wait_idle(until);
    out.set_remaining_requests(scheduler_->stats().active);
  }
  return out;
}

void ServeNode::request_shutdown(double drain_timeout_seconds) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!shutdown_requested_) shutdown_requested_ = drain_timeout_seconds;
  }
  cv_.notify_all();
}

}  // namespace tandem::launcher::serve
