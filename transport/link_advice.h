// What a user expects of a link, checked against what UCX picked and what was
// measured: TCP although the box has RDMA devices, the 1 GbE port instead of
// the fast one, or a bandwidth far below the interface's speed. Each finding
// is a sentence that names the fix; the launcher prints them as warnings (or
// refuses to start when asked to).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "transport/link_probe.h"

namespace tandem::transport {

// What this box offers, from sysfs.
struct LinkEnvironment {
  std::vector<std::string> rdma_devices;          // /sys/class/infiniband/*: "mlx5_0"
  std::map<std::string, int64_t> interface_mbps;  // /sys/class/net/<dev>/speed, where known
  std::map<std::string, double> rdma_port_gbps;   // "mlx5_0:1" -> 200 (ports/1/rate)
};
// `sysfs` is "/sys" but for tests.
LinkEnvironment read_link_environment(const std::string& sysfs = "/sys");

enum class LinkKind { kUnknown, kSharedMemory, kTcp, kRdma };
// From a link_path(): RDMA when any lane is rc/dc/ud verbs, else TCP when any
// lane is tcp, else shared memory (posix, sysv, cma, xpmem, knem, self).
LinkKind link_kind(std::string_view path);
std::string_view link_kind_name(LinkKind kind);
// The network device of a path's TCP or RDMA lane ("eth0" of "tcp/eth0",
// "mlx5_0:1" of "rc_mlx5/mlx5_0:1"); empty when it has none.
std::string network_device(std::string_view path);

// The findings about one link; empty when it looks as a user would expect.
std::vector<std::string> link_warnings(const LinkMeasurement& m, const LinkEnvironment& env);

}  // namespace tandem::transport
