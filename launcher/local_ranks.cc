#include "launcher/local_ranks.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

extern char** environ;

namespace tandem::launcher {
namespace {

using std::chrono::milliseconds;
namespace tr = tandem::transport;

absl::StatusOr<std::vector<std::string>> own_argv() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t start = 0; start < all.size();) {
    const size_t end = all.find('\0', start);
    args.push_back(all.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  if (args.empty()) return absl::InternalError("cannot read /proc/self/cmdline");
  return args;
}

}  // namespace

bool started_as_local_rank() {
  const char* parent = std::getenv(kLocalRankVar);
  if (parent == nullptr) return false;
  // Die with rank 0; if it is already gone, the signal would never come.
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (std::to_string(::getppid()) != parent) ::raise(SIGTERM);
  return true;
}

absl::StatusOr<uint16_t> free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(fd);
  if (!ok) return absl::UnavailableError("cannot find a free port on 127.0.0.1");
  return ntohs(a.sin_port);
}

std::string random_token() {
  std::random_device rd;
  std::string t;
  for (int i = 0; i < 4; ++i) absl::StrAppend(&t, absl::Hex(rd(), absl::kZeroPad8));
  return t;
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("was killed by signal ", WTERMSIG(status));
  return "stopped";
}

LocalRanks::~LocalRanks() {
  stop_ = true;
  if (watcher_.joinable()) watcher_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (Child& c : children_) {
    if (c.running) {
      ::kill(c.pid, SIGKILL);
      int st = 0;
      ::waitpid(c.pid, &st, 0);
    }
  }
}

absl::Status LocalRanks::spawn(int n, const std::map<std::string, std::string>& extra_env) {
  TANDEM_ASSIGN_OR_RETURN(std::vector<std::string> args, own_argv());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (int r = 1; r < n; ++r) {
    std::map<std::string, std::string> env_map;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string kv(*e);
      const size_t eq = kv.find('=');
      if (eq != std::string::npos) env_map[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    for (const auto& [k, v] : extra_env) env_map[k] = v;
    env_map["TANDEM_RANK"] = std::to_string(r);
    env_map[kLocalRankVar] = std::to_string(::getpid());
    std::vector<std::string> env_strings;
    for (const auto& [k, v] : env_map) env_strings.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    pid_t pid = -1;
    const int rc =
        ::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), envp.data());
    if (rc != 0) {
      return absl::InternalError(absl::StrCat("cannot start rank ", r, ": ", std::strerror(rc)));
    }
    std::lock_guard<std::mutex> lock(mu_);
    children_.push_back({pid, r, true, 0});
  }
  watcher_ = std::thread([this] { watch(); });
  return absl::OkStatus();
}

void LocalRanks::set_comm(tr::Communicator* comm) {
  std::lock_guard<std::mutex> lock(mu_);
  comm_ = comm;
  if (comm_ != nullptr && failure_) comm_->abort(*failure_);
}

std::optional<absl::Status> LocalRanks::failure() {
  std::lock_guard<std::mutex> lock(mu_);
  return failure_;
}

std::optional<std::string> LocalRanks::exit_of(int rank) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Child& c : children_) {
    if (c.rank == rank && !c.running) return describe_exit(c.status);
  }
  return std::nullopt;
}

absl::Status LocalRanks::wait_all(tr::Deadline deadline) {
  while (tr::Clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (failure_) return *failure_;
      if (std::none_of(children_.begin(), children_.end(),
                       [](const Child& c) { return c.running; })) {
        return absl::OkStatus();
      }
    }
    std::this_thread::sleep_for(milliseconds(5));
  }
  std::vector<int> late;
  std::lock_guard<std::mutex> lock(mu_);
  for (const Child& c : children_) {
    if (c.running) late.push_back(c.rank);
  }
  return absl::DeadlineExceededError(
      absl::StrCat("ranks ", absl::StrJoin(late, ","), " did not exit in time"));
}

void LocalRanks::watch() {
  while (!stop_) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (Child& c : children_) {
        if (!c.running || ::waitpid(c.pid, &c.status, WNOHANG) != c.pid) continue;
        c.running = false;
        const int st = c.status;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) continue;
        if (!failure_) {
          failure_ =
              absl::UnavailableError(absl::StrCat("rank ", c.rank, " ", describe_exit(st)));
          if (comm_ != nullptr) comm_->abort(*failure_);
        }
      }
    }
    std::this_thread::sleep_for(milliseconds(5));
  }
}

}  // namespace tandem::launcher
