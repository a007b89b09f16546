#include "transport/link_advice.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace tandem::transport {
namespace {

namespace fs = std::filesystem;

// Below this an interface is the management port, not the cluster link.
constexpr int64_t kFastInterfaceMbps = 10000;
// A measured bandwidth below this share of the interface's is "far below".
constexpr double kFarBelowShare = 0.2;

std::string first_line(const fs::path& file) {
  std::ifstream in(file);
  std::string line;
  std::getline(in, line);
  return line;
}

// The lanes of a path: "tcp/lo posix/memory" -> {"tcp", "lo"}, {"posix", "memory"}.
std::vector<std::pair<std::string, std::string>> lanes(std::string_view path) {
  std::vector<std::pair<std::string, std::string>> out;
  std::istringstream in{std::string(path)};
  for (std::string lane; in >> lane;) {
    const size_t slash = lane.find('/');
    if (slash == std::string::npos) continue;
    out.emplace_back(lane.substr(0, slash), lane.substr(slash + 1));
  }
  return out;
}

bool is_rdma_tl(const std::string& tl) {
  return tl.rfind("rc", 0) == 0 || tl.rfind("dc", 0) == 0 || tl.rfind("ud", 0) == 0;
}

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : fallback;
}

}  // namespace

LinkEnvironment read_link_environment(const std::string& sysfs) {
  LinkEnvironment env;
  std::error_code ec;
  for (const auto& dev : fs::directory_iterator(fs::path(sysfs) / "class/infiniband", ec)) {
    const std::string name = dev.path().filename().string();
    env.rdma_devices.push_back(name);
    std::error_code port_ec;
    for (const auto& port : fs::directory_iterator(dev.path() / "ports", port_ec)) {
      // "200 Gb/sec (4X HDR)"
      const double gbps = std::atof(first_line(port.path() / "rate").c_str());
      if (gbps > 0) env.rdma_port_gbps[name + ":" + port.path().filename().string()] = gbps;
    }
  }
  std::sort(env.rdma_devices.begin(), env.rdma_devices.end());
  for (const auto& dev : fs::directory_iterator(fs::path(sysfs) / "class/net", ec)) {
    // Unknown (-1), or EINVAL for virtual interfaces such as lo.
    const int64_t mbps = std::atoll(first_line(dev.path() / "speed").c_str());
    if (mbps > 0) env.interface_mbps[dev.path().filename().string()] = mbps;
  }
  return env;
}

LinkKind link_kind(std::string_view path) {
  bool tcp = false, shm = false;
  for (const auto& [tl, dev] : lanes(path)) {
    if (is_rdma_tl(tl)) return LinkKind::kRdma;
    tcp = tcp || tl == "tcp";
    shm = shm || tl == "posix" || tl == "sysv" || tl == "cma" || tl == "xpmem" || tl == "knem" ||
          tl == "self";
  }
  if (tcp) return LinkKind::kTcp;
  return shm ? LinkKind::kSharedMemory : LinkKind::kUnknown;
}

std::string_view link_kind_name(LinkKind kind) {
  switch (kind) {
    case LinkKind::kSharedMemory:
      return "shared memory";
    case LinkKind::kTcp:
      return "tcp";
    case LinkKind::kRdma:
      return "rdma";
    case LinkKind::kUnknown:
      break;
  }
  return "unknown";
}

std::string network_device(std::string_view path) {
  for (const auto& [tl, dev] : lanes(path)) {
    if (is_rdma_tl(tl)) return dev;
  }
  for (const auto& [tl, dev] : lanes(path)) {
    if (tl == "tcp") return dev;
  }
  return "";
}

std::vector<std::string> link_warnings(const LinkMeasurement& m, const LinkEnvironment& env) {
  std::vector<std::string> out;
  const std::string link = absl::StrCat("link rank ", m.rank_a, " <-> ", m.rank_b);
  const LinkKind kind = link_kind(m.path);
  const std::string device = network_device(m.path);
  if (kind == LinkKind::kTcp && !env.rdma_devices.empty()) {
    out.push_back(absl::StrCat(
        link, " runs over TCP (", m.path, ") although this box has RDMA devices (",
        absl::StrJoin(env.rdma_devices, ", "), "): let UCX use them (UCX_TLS=all, or rc,dc in "
        "UCX_TLS; now '", env_or("UCX_TLS", "(default)"), "'), check UCX_NET_DEVICES (now '",
        env_or("UCX_NET_DEVICES", "(default)"), "') and that the port is ACTIVE (ibv_devinfo)"));
  }
  double device_gbits = 0;  // the interface's speed in Gb/s, when known
  if (kind == LinkKind::kTcp) {
    if (auto it = env.interface_mbps.find(device); it != env.interface_mbps.end()) {
      device_gbits = it->second / 1000.0;
      if (it->second < kFastInterfaceMbps) {
        std::vector<std::string> fast;
        for (const auto& [name, mbps] : env.interface_mbps) {
          if (mbps >= kFastInterfaceMbps) fast.push_back(absl::StrCat(name, " (", mbps / 1000, " Gb/s)"));
        }
        out.push_back(absl::StrCat(
            link, " runs over ", device, ", a ", it->second, " Mb/s interface (the 1 GbE port?): "
            "point UCX_NET_DEVICES at the fast interface (the ConnectX-7's",
            fast.empty() ? "" : ": ", absl::StrJoin(fast, ", "), ") and the ranks' addresses at "
            "its subnet"));
      }
    }
  } else if (kind == LinkKind::kRdma) {
    if (auto it = env.rdma_port_gbps.find(device); it != env.rdma_port_gbps.end()) {
      device_gbits = it->second;
    }
  }
  if (device_gbits > 0 && m.bandwidth_gbps > 0 &&
      m.bandwidth_gbps * 8 < kFarBelowShare * device_gbits) {
    out.push_back(absl::StrFormat(
        "%s measured %.2f GB/s, under a fifth of %s's %.0f Gb/s (%.1f GB/s): check the MTU "
        "(jumbo frames on both ends), the cable and the PCIe slot, and other traffic on the link",
        link, m.bandwidth_gbps, device, device_gbits, device_gbits / 8));
  }
  return out;
}

}  // namespace tandem::transport
