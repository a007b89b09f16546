#include "launcher/serve/cluster.h"

#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace tandem::launcher::serve {
namespace {

namespace tr = tandem::transport;

// A /proc/meminfo value in bytes (its lines are "Name:   123 kB").
uint64_t meminfo_bytes(const std::string& text, const std::string& name) {
  const size_t at = text.find(name + ":");
  if (at == std::string::npos) return 0;
  return std::strtoull(text.c_str() + at + name.size() + 1, nullptr, 10) * 1024;
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace

std::string rank_key(int rank) { return absl::StrCat("tandem/serve/rank/", rank); }

v1::RankReport describe_this_process(int rank) {
  v1::RankReport r;
  r.set_rank(rank);
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) == 0) r.set_host(host);
  r.set_pid(static_cast<int32_t>(::getpid()));
  std::ifstream meminfo("/proc/meminfo");
  const std::string text((std::istreambuf_iterator<char>(meminfo)), std::istreambuf_iterator<char>());
  r.set_memory_total_bytes(meminfo_bytes(text, "MemTotal"));
  r.set_memory_available_bytes(meminfo_bytes(text, "MemAvailable"));
  std::ifstream statm("/proc/self/statm");
  uint64_t size_pages = 0, rss_pages = 0;
  statm >> size_pages >> rss_pages;
  r.set_rss_bytes(rss_pages * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)));
  return r;
}

WorkerHeartbeat::WorkerHeartbeat(tr::Bootstrap& boot, const WorkerOptions& options)
    : boot_(boot), options_(options), report_(describe_this_process(boot.rank())) {
  report_.set_health(v1::RANK_HEALTH_LOADING);
  thread_ = std::thread([this] { run(); });
}

WorkerHeartbeat::~WorkerHeartbeat() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void WorkerHeartbeat::set_health(v1::RankHealth health, const std::string& detail) {
  std::lock_guard<std::mutex> lock(mu_);
  report_.set_health(health);
  report_.set_detail(detail);
}

absl::Status WorkerHeartbeat::lost_status() {
  std::lock_guard<std::mutex> lock(mu_);
  return lost_status_;
}

absl::Status WorkerHeartbeat::publish() {
  std::string value;
  {
    std::lock_guard<std::mutex> lock(mu_);
    report_.set_heartbeat(report_.heartbeat() + 1);
    const v1::RankReport fresh = describe_this_process(boot_.rank());
    report_.set_memory_available_bytes(fresh.memory_available_bytes());
    report_.set_rss_bytes(fresh.rss_bytes());
    value = report_.SerializeAsString();
  }
  return boot_.set(rank_key(boot_.rank()), value,
                   tr::BootstrapClock::now() + options_.heartbeat * 4);
}

void WorkerHeartbeat::run() {
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_ || command_) return;
    }
    absl::Status s = publish();
    if (s.ok()) {
      absl::StatusOr<std::string> command =
          boot_.get(kControlKey, tr::BootstrapClock::now() + options_.heartbeat);
      if (command.ok()) {
        v1::ControlCommand c;
        std::lock_guard<std::mutex> lock(mu_);
        if (c.ParseFromString(*command) && c.kind() == v1::ControlCommand::KIND_SHUTDOWN) {
          std::fprintf(stderr, "tandem serve (rank %d): shutting down (%s)\n", boot_.rank(),
                       c.reason().c_str());
          command_ = true;
        } else {
          s = absl::DataLossError("rank 0 sent a control command this rank does not understand");
        }
      } else if (command.status().code() != absl::StatusCode::kDeadlineExceeded) {
        s = command.status();
      }
    }
    if (!s.ok()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        lost_status_ = absl::UnavailableError(
            absl::StrCat("lost rank 0 (", s.message(), "): exiting, nothing left to serve"));
      }
      lost_.store(true);
      cv_.notify_all();
      return;
    }
    cv_.notify_all();
  }
}

absl::Status WorkerHeartbeat::finish(Clock::time_point deadline) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_until(lock, deadline, [&] { return command_ || !lost_status_.ok(); });
    if (!lost_status_.ok()) return lost_status_;
    if (!command_) {
      return absl::DeadlineExceededError("rank 0 did not send the shutdown command in time");
    }
  }
  return boot_.barrier(deadline);
}

ClusterMonitor::ClusterMonitor(tr::Bootstrap* boot, int world_size, LocalRanks* children,
                               std::chrono::milliseconds heartbeat_timeout)
    : boot_(boot),
      world_size_(world_size),
      children_(children),
      heartbeat_timeout_(heartbeat_timeout),
      started_(Clock::now()) {
  for (int r = 1; r < world_size_; ++r) seen_[r].last_change = started_;
  if (boot_ != nullptr && world_size_ > 1) thread_ = std::thread([this] { poll(); });
}

ClusterMonitor::~ClusterMonitor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ClusterMonitor::poll() {
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    for (int r = 1; r < world_size_; ++r) {
      // A short wait: before a rank's first report its key does not exist.
      absl::StatusOr<std::string> value =
          boot_->get(rank_key(r), tr::BootstrapClock::now() + std::chrono::milliseconds(50));
      std::optional<std::string> exit = children_ ? children_->exit_of(r) : std::nullopt;
      std::lock_guard<std::mutex> lock(mu_);
      Seen& s = seen_[r];
      v1::RankReport report;
      if (value.ok() && report.ParseFromString(*value) &&
          (!s.reported || report.heartbeat() != s.report.heartbeat())) {
        s.report = report;
        s.reported = true;
        s.last_change = Clock::now();
      }
      if (exit) s.exit = *exit;
      if (failure_) continue;
      if (!s.exit.empty()) {
        failure_ = absl::UnavailableError(absl::StrCat("rank ", r, " ", s.exit));
      } else if (s.reported && s.report.health() == v1::RANK_HEALTH_FAILED) {
        failure_ = absl::UnavailableError(
            absl::StrCat("rank ", r, " failed: ", s.report.detail()));
      } else if (Clock::now() - s.last_change > heartbeat_timeout_) {
        failure_ = absl::UnavailableError(absl::StrCat(
            "rank ", r, " sent no heartbeat for ", seconds_since(s.last_change), " s"));
      }
      if (failure_ && comm_ != nullptr) comm_->abort(*failure_);
    }
    std::unique_lock<std::mutex> lock(mu_);
    stop_cv_.wait_for(lock, std::chrono::milliseconds(200), [&] { return stop_; });
  }
}

absl::Status ClusterMonitor::wait_all_loaded(Clock::time_point deadline) {
  while (true) {
    std::vector<int> loading;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (failure_) return *failure_;
      for (const auto& [r, s] : seen_) {
        if (!s.reported || s.report.health() != v1::RANK_HEALTH_HEALTHY) loading.push_back(r);
      }
    }
    if (loading.empty()) return absl::OkStatus();
    if (Clock::now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("ranks ", absl::StrJoin(loading, ","), " did not finish loading in time"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void ClusterMonitor::set_comm(tr::Communicator* comm) {
  std::lock_guard<std::mutex> lock(mu_);
  comm_ = comm;
  if (comm_ != nullptr && failure_) comm_->abort(*failure_);
}

std::optional<absl::Status> ClusterMonitor::failure() {
  std::lock_guard<std::mutex> lock(mu_);
  return failure_;
}

std::vector<v1::RankStatus> ClusterMonitor::ranks() {
  std::vector<v1::RankStatus> out;
  const v1::RankReport self = describe_this_process(0);
  v1::RankStatus& zero = out.emplace_back();
  zero.set_rank(0);
  zero.set_host(self.host());
  zero.set_pid(self.pid());
  zero.set_health(v1::RANK_HEALTH_HEALTHY);
  zero.set_memory_total_bytes(self.memory_total_bytes());
  zero.set_memory_available_bytes(self.memory_available_bytes());
  zero.set_rss_bytes(self.rss_bytes());
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [r, s] : seen_) {
    v1::RankStatus& st = out.emplace_back();
    st.set_rank(r);
    st.set_host(s.report.host());
    st.set_pid(s.report.pid());
    st.set_memory_total_bytes(s.report.memory_total_bytes());
    st.set_memory_available_bytes(s.report.memory_available_bytes());
    st.set_rss_bytes(s.report.rss_bytes());
    st.set_last_heartbeat_age_seconds(seconds_since(s.last_change));
    if (!s.exit.empty()) {
      st.set_health(v1::RANK_HEALTH_FAILED);
      st.set_detail(absl::StrCat("its process ", s.exit));
    } else if (!s.reported) {
      st.set_health(v1::RANK_HEALTH_LOADING);
    } else if (s.report.health() == v1::RANK_HEALTH_FAILED) {
      st.set_health(v1::RANK_HEALTH_FAILED);
      st.set_detail(s.report.detail());
    } else if (Clock::now() - s.last_change > heartbeat_timeout_) {
      st.set_health(v1::RANK_HEALTH_UNRESPONSIVE);
      st.set_detail(absl::StrCat("no heartbeat for ", seconds_since(s.last_change), " s"));
    } else {
      st.set_health(s.report.health());
    }
  }
  return out;
}

absl::Status ClusterMonitor::stop_workers(const std::string& reason, Clock::time_point deadline) {
  if (boot_ == nullptr || world_size_ <= 1) return absl::OkStatus();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  v1::ControlCommand c;
  c.set_kind(v1::ControlCommand::KIND_SHUTDOWN);
  c.set_reason(reason);
  TANDEM_RETURN_IF_ERROR(boot_->set(kControlKey, c.SerializeAsString(), deadline));
  if (failure()) return *failure();  // a dead rank would never reach the barrier
  return boot_->barrier(deadline);
}

}  // namespace tandem::launcher::serve
