// Test helper: two "hosts" on one machine. Two network namespaces
// (tandem-<pid>-a and tandem-<pid>-b) joined by a veth pair, 10.77.<x>.1/24
// in a and 10.77.<x>.2/24 in b, with no route anywhere else. The destructor
// deletes both namespaces (which deletes the veth pair); namespaces and veths
// left by a test process that died (its pid no longer runs) are deleted
// before new ones are made. Every `ip` call is bounded (5 s).
#pragma once

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tests/multiproc/process_group.h"

namespace tandem::testing {

class NetnsPair {
 public:
  static constexpr const char* kNamespacePrefix = "tandem-";
  static constexpr const char* kVethPrefix = "tnd";

  // The pair, or nullptr with `why_not` saying why namespaces cannot be made
  // here (not root, no `ip`, no netns or veth support): the test skips.
  static std::unique_ptr<NetnsPair> create(std::string* why_not) {
    if (::geteuid() != 0) {
      *why_not = "not root: network namespaces need CAP_SYS_ADMIN";
      return nullptr;
    }
    std::string ip = find_ip();
    if (ip.empty()) {
      *why_not = "no `ip` binary (iproute2) in /usr/sbin, /sbin, /usr/bin or /bin";
      return nullptr;
    }
    remove_stale(ip);
    const int pid = static_cast<int>(::getpid());
    std::unique_ptr<NetnsPair> p(new NetnsPair(ip, pid));
    std::string err;
    if (!p->run({"netns", "add", p->ns_a_}, &err)) {
      *why_not = "`ip netns add` failed: " + err;
      return nullptr;
    }
    p->made_a_ = true;
    if (!p->run({"netns", "add", p->ns_b_}, &err)) {
      *why_not = "`ip netns add` failed: " + err;
      return nullptr;
    }
    p->made_b_ = true;
    if (!p->run({"link", "add", p->veth_a_, "type", "veth", "peer", "name", p->veth_b_}, &err)) {
      *why_not = "no veth support: " + err;
      return nullptr;
    }
    p->made_veth_ = true;
    const std::vector<std::vector<std::string>> steps = {
        {"link", "set", p->veth_a_, "netns", p->ns_a_},
        {"link", "set", p->veth_b_, "netns", p->ns_b_},
        {"-n", p->ns_a_, "addr", "add", p->addr_a_ + "/24", "dev", p->veth_a_},
        {"-n", p->ns_b_, "addr", "add", p->addr_b_ + "/24", "dev", p->veth_b_},
        {"-n", p->ns_a_, "link", "set", "lo", "up"},
        {"-n", p->ns_b_, "link", "set", "lo", "up"},
        {"-n", p->ns_a_, "link", "set", p->veth_a_, "up"},
        {"-n", p->ns_b_, "link", "set", p->veth_b_, "up"},
    };
    for (const auto& step : steps) {
      if (!p->run(step, &err)) {
        *why_not = "setting up the veth pair failed: " + err;
        return nullptr;
      }
    }
    return p;
  }

  ~NetnsPair() {
    std::string ignored;
    if (made_a_) run({"netns", "del", ns_a_}, &ignored);
    if (made_b_) run({"netns", "del", ns_b_}, &ignored);
    // Only if it never reached a namespace (deleting one deletes its peer).
    if (made_veth_) run_quiet({"link", "del", veth_a_});
  }
  NetnsPair(const NetnsPair&) = delete;
  NetnsPair& operator=(const NetnsPair&) = delete;

  const std::string& ip() const { return ip_; }
  const std::string& ns_a() const { return ns_a_; }
  const std::string& ns_b() const { return ns_b_; }
  const std::string& veth_a() const { return veth_a_; }
  const std::string& veth_b() const { return veth_b_; }
  const std::string& addr_a() const { return addr_a_; }
  const std::string& addr_b() const { return addr_b_; }

  // argv prefix that runs a program inside namespace a or b.
  std::vector<std::string> exec_in(const std::string& ns) const {
    return {ip_, "netns", "exec", ns};
  }

  // Runs `ip args...` (bounded); false with its stderr in `err` on failure.
  bool run(const std::vector<std::string>& args, std::string* err) const {
    return run_ip(ip_, args, err);
  }

  // Whether the namespace still exists (for the cleanup check).
  static bool namespace_exists(const std::string& name) {
    return ::access(("/var/run/netns/" + name).c_str(), F_OK) == 0;
  }

 private:
  NetnsPair(std::string ip, int pid)
      : ip_(std::move(ip)),
        ns_a_(kNamespacePrefix + std::to_string(pid) + "-a"),
        ns_b_(kNamespacePrefix + std::to_string(pid) + "-b"),
        veth_a_(kVethPrefix + std::to_string(pid) + "a"),  // <= 15 chars (IFNAMSIZ)
        veth_b_(kVethPrefix + std::to_string(pid) + "b") {
    const std::string net = "10.77." + std::to_string(pid % 250 + 1) + ".";
    addr_a_ = net + "1";
    addr_b_ = net + "2";
  }

  static std::string find_ip() {
    for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
      if (::access(p, X_OK) == 0) return p;
    }
    return "";
  }

  static bool run_ip(const std::string& ip, const std::vector<std::string>& args,
                     std::string* err) {
    ProcessGroup g(make_temp_dir());
    std::vector<std::string> argv = {ip};
    argv.insert(argv.end(), args.begin(), args.end());
    g.spawn(argv, {}, "ip");
    bool finished = g.wait_all(std::chrono::seconds(5));
    if (finished && g.exited_ok(0)) return true;
    std::ostringstream os;
    for (const auto& a : argv) os << a << " ";
    os << (finished ? "failed: " : "timed out: ") << g.err(0);
    *err = os.str();
    return false;
  }
  void run_quiet(const std::vector<std::string>& args) const {
    std::string ignored;
    run_ip(ip_, args, &ignored);
  }

  // The pid in "<prefix><pid><suffix>", if that process no longer runs.
  static bool owner_is_dead(const std::string& name, const std::string& prefix) {
    if (name.rfind(prefix, 0) != 0) return false;
    size_t i = prefix.size(), j = i;
    while (j < name.size() && name[j] >= '0' && name[j] <= '9') ++j;
    if (j == i || j - i > 9) return false;
    long pid = std::stol(name.substr(i, j - i));
    return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
  }

  // Namespaces and veths of ours whose test process is gone (killed by a
  // ctest timeout, say); live ones belong to a test running beside us.
  static void remove_stale(const std::string& ip) {
    std::vector<std::string> names;
    {
      ProcessGroup g(make_temp_dir());
      g.spawn({ip, "netns", "list"}, {}, "list");
      if (!g.wait_all(std::chrono::seconds(5))) return;
      std::istringstream in(g.out(0));
      for (std::string line; std::getline(in, line);) {
        std::string name = line.substr(0, line.find(' '));
        if (owner_is_dead(name, kNamespacePrefix)) names.push_back(name);
      }
    }
    std::string ignored;
    for (const auto& n : names) run_ip(ip, {"netns", "del", n}, &ignored);
    std::vector<std::string> links;
    {
      ProcessGroup g(make_temp_dir());
      g.spawn({ip, "-o", "link", "show"}, {}, "links");
      if (!g.wait_all(std::chrono::seconds(5))) return;
      std::istringstream in(g.out(0));
      for (std::string line; std::getline(in, line);) {
        // "12: tnd1234a@tnd1234b: <...>"
        size_t c = line.find(": ");
        if (c == std::string::npos) continue;
        std::string name = line.substr(c + 2);
        name = name.substr(0, name.find_first_of("@:"));
        if (owner_is_dead(name, kVethPrefix)) links.push_back(name);
      }
    }
    for (const auto& l : links) run_ip(ip, {"link", "del", l}, &ignored);
  }

  std::string ip_, ns_a_, ns_b_, veth_a_, veth_b_, addr_a_, addr_b_;
  bool made_a_ = false, made_b_ = false, made_veth_ = false;
};

}  // namespace tandem::testing
