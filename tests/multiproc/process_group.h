// Test helper: starts real processes (posix_spawn) with their own
// environment, output to files, and always kills (SIGKILL) and reaps them,
// even when the test fails. Every wait is bounded.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace tandem::testing {

// transport_worker's exit code for UNAVAILABLE or DEADLINE_EXCEEDED: a
// survivor that noticed a dead peer or link and left cleanly.
constexpr int kExitPeerLost = 42;

// The milliseconds of a worker's "DETECTED iteration I after N ms" line, or -1.
inline long detected_after_ms(const std::string& out) {
  size_t d = out.find("DETECTED");
  if (d == std::string::npos) return -1;
  size_t at = out.find(" after ", d);
  if (at == std::string::npos) return -1;
  return std::strtol(out.c_str() + at + 7, nullptr, 10);
}

// A port that was free a moment ago on 127.0.0.1 (the store binds it with
// SO_REUSEADDR, so TIME_WAIT leftovers do not matter).
inline uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

inline std::string make_temp_dir() {
  std::string tmpl = "/tmp/tandem-multiproc-XXXXXX";
  char* d = ::mkdtemp(tmpl.data());
  return d ? std::string(d) : std::string("/tmp");
}

class ProcessGroup {
 public:
  struct Child {
    pid_t pid = -1;
    std::string out_path, err_path;
    bool done = false;
    int status = 0;
  };

  explicit ProcessGroup(std::string dir) : dir_(std::move(dir)) {}
  // Kills what still runs, then removes the output files and the directory.
  ~ProcessGroup() {
    kill_all();
    for (const Child& c : children_) {
      ::unlink(c.out_path.c_str());
      ::unlink(c.err_path.c_str());
    }
    ::rmdir(dir_.c_str());
  }
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  // Starts argv with the parent's environment plus `env`; returns its index.
  int spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
            const std::string& name) {
    std::map<std::string, std::string> all;
    for (char** e = environ; *e != nullptr; ++e) {
      std::string kv(*e);
      size_t eq = kv.find('=');
      if (eq != std::string::npos) all[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    for (const auto& [k, v] : env) all[k] = v;
    std::vector<std::string> env_strings;
    for (const auto& [k, v] : all) env_strings.push_back(k + "=" + v);
    std::vector<char*> envp, args;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<std::string> argv_copy = argv;
    for (auto& s : argv_copy) args.push_back(s.data());
    args.push_back(nullptr);

    Child c;
    c.out_path = dir_ + "/" + name + ".out";
    c.err_path = dir_ + "/" + name + ".err";
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, c.out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0600);
    posix_spawn_file_actions_addopen(&fa, 2, c.err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0600);
    int rc = posix_spawn(&c.pid, args[0], &fa, nullptr, args.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) c.pid = -1;
    children_.push_back(c);
    return static_cast<int>(children_.size()) - 1;
  }

  // Waits for every child until the deadline; false if some still run.
  bool wait_all(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      bool all = true;
      for (Child& c : children_) {
        if (c.done || c.pid < 0) continue;
        int st = 0;
        pid_t r = ::waitpid(c.pid, &st, WNOHANG);
        if (r == c.pid) {
          c.done = true;
          c.status = st;
        } else {
          all = false;
        }
      }
      if (all) return true;
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  // Polls child i's stdout until it holds `needle`; false at the timeout or
  // once the child has exited without printing it.
  bool wait_for_output(int i, const std::string& needle, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (out(i).find(needle) != std::string::npos) return true;
      Child& c = children_[i];
      if (c.pid < 0 || c.done) return false;
      int st = 0;
      if (::waitpid(c.pid, &st, WNOHANG) == c.pid) {
        c.done = true;
        c.status = st;
        return out(i).find(needle) != std::string::npos;
      }
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  // False once child i has exited (it is then reaped and its status kept).
  bool running(int i) {
    Child& c = children_[i];
    if (c.pid < 0 || c.done) return false;
    int st = 0;
    if (::waitpid(c.pid, &st, WNOHANG) != c.pid) return true;
    c.done = true;
    c.status = st;
    return false;
  }

  void kill(int i) {
    if (children_[i].pid > 0 && !children_[i].done) ::kill(children_[i].pid, SIGKILL);
  }

  void kill_all() {
    for (Child& c : children_) {
      if (c.pid > 0 && !c.done) {
        ::kill(c.pid, SIGKILL);
        int st = 0;
        ::waitpid(c.pid, &st, 0);
        c.done = true;
        c.status = st;
      }
    }
  }

  const Child& child(int i) const { return children_[i]; }
  bool exited_with(int i, int code) const {
    const Child& c = children_[i];
    return c.done && WIFEXITED(c.status) && WEXITSTATUS(c.status) == code;
  }
  bool exited_ok(int i) const {
    const Child& c = children_[i];
    return c.done && WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0;
  }
  std::string out(int i) const { return slurp(children_[i].out_path); }
  std::string err(int i) const { return slurp(children_[i].err_path); }
  std::string describe() const {
    std::ostringstream os;
    for (size_t i = 0; i < children_.size(); ++i) {
      os << "--- child " << i << " status " << children_[i].status << "\nstdout:\n"
         << out(static_cast<int>(i)) << "stderr:\n"
         << err(static_cast<int>(i));
    }
    return os.str();
  }

  static std::string slurp(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }

 private:
  std::string dir_;
  std::vector<Child> children_;
};

}  // namespace tandem::testing
