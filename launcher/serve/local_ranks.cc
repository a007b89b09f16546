#include "launcher/serve/local_ranks.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cstring>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

extern char** environ;

namespace tandem::launcher::serve {
namespace {

std::vector<std::string> own_argv() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t start = 0; start < all.size();) {
    const size_t end = all.find('\0', start);
    args.push_back(all.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return args;
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("was killed by signal ", WTERMSIG(status));
  return "stopped";
}

}  // namespace

LocalRanks::~LocalRanks() {
  stop_ = true;
  if (watcher_.joinable()) watcher_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (Child& c : children_) {
    if (!c.running) continue;
    ::kill(c.pid, SIGKILL);
    ::waitpid(c.pid, &c.status, 0);
    c.running = false;
  }
}

absl::Status LocalRanks::spawn(int world_size, const std::map<std::string, std::string>& env) {
  std::vector<std::string> args = own_argv();
  if (args.empty()) return absl::InternalError("cannot read /proc/self/cmdline");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (int r = 1; r < world_size; ++r) {
    std::map<std::string, std::string> env_map;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string kv(*e);
      const size_t eq = kv.find('=');
      if (eq != std::string::npos) env_map[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    for (const auto& [k, v] : env) env_map[k] = v;
    env_map["TANDEM_RANK"] = std::to_string(r);
    env_map[kLocalChildVar] = std::string(1, '1');  // not = "1": GCC 12 -Wrestrict false positive
    std::vector<std::string> env_strings;
    for (const auto& [k, v] : env_map) env_strings.push_back(absl::StrCat(k, "=", v));
    std::vector<char*> envp;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), envp.data());
    if (rc != 0) {
      return absl::InternalError(absl::StrCat("cannot start rank ", r, ": ", std::strerror(rc)));
    }
    std::lock_guard<std::mutex> lock(mu_);
    children_.push_back({pid, r, true, 0});
  }
  watcher_ = std::thread([this] { watch(); });
  return absl::OkStatus();
}

void LocalRanks::reap_locked() {
  for (Child& c : children_) {
    if (c.running && ::waitpid(c.pid, &c.status, WNOHANG) == c.pid) c.running = false;
  }
}

void LocalRanks::watch() {
  while (!stop_) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      reap_locked();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::optional<std::string> LocalRanks::exit_of(int rank) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Child& c : children_) {
    if (c.rank == rank && !c.running) return describe_exit(c.status);
  }
  return std::nullopt;
}

std::optional<std::string> LocalRanks::first_failure() {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Child& c : children_) {
    if (!c.running && !(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0)) {
      return absl::StrCat("rank ", c.rank, " ", describe_exit(c.status));
    }
  }
  return std::nullopt;
}

pid_t LocalRanks::pid_of(int rank) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Child& c : children_) {
    if (c.rank == rank) return c.pid;
  }
  return -1;
}

absl::Status LocalRanks::wait_all(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      reap_locked();
      bool any_running = false;
      for (const Child& c : children_) any_running |= c.running;
      if (!any_running) break;
      if (std::chrono::steady_clock::now() >= deadline) {
        std::vector<int> late;
        for (Child& c : children_) {
          if (!c.running) continue;
          late.push_back(c.rank);
          ::kill(c.pid, SIGKILL);
          ::waitpid(c.pid, &c.status, 0);
          c.running = false;
        }
        return absl::DeadlineExceededError(
            absl::StrCat("ranks ", absl::StrJoin(late, ","), " did not exit in time (killed)"));
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (auto f = first_failure()) return absl::UnavailableError(*f);
  return absl::OkStatus();
}

}  // namespace tandem::launcher::serve
