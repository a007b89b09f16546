#include "launcher/link_check.h"

#include <algorithm>
#include <cstdio>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "launcher/units.h"
#include "transport/link_advice.h"

namespace tandem::launcher {

namespace tr = tandem::transport;

void add_link_check_flags(CLI::App& command, LinkCheckFlags& f) {
  command.add_option("--require-link", f.require,
                     "refuse to start unless every link is RDMA (rdma), or take any (any)")
      ->check(CLI::IsMember({"any", "rdma"}))
      ->capture_default_str();
  command.add_option("--min-link-bandwidth", f.min_bandwidth,
                     "refuse to start when a link measures less, e.g. 10GB/s");
  command.add_flag("--skip-link-check", f.skip,
                   "do not measure the links at start-up (rank 0 decides for every rank)");
}

absl::StatusOr<double> min_link_gbps(const LinkCheckFlags& f) {
  if (f.skip && (f.require != "any" || !f.min_bandwidth.empty())) {
    return absl::InvalidArgumentError(
        "--skip-link-check does not go with --require-link or --min-link-bandwidth: they need "
        "the measurement");
  }
  if (f.min_bandwidth.empty()) return 0.0;
  TANDEM_ASSIGN_OR_RETURN(double bytes_per_s,
                          parse_bandwidth("--min-link-bandwidth", f.min_bandwidth));
  return bytes_per_s / 1e9;
}

absl::StatusOr<std::vector<tr::LinkMeasurement>> check_links(tr::Communicator& comm,
                                                             const LinkCheckFlags& f,
                                                             std::chrono::milliseconds timeout) {
  TANDEM_ASSIGN_OR_RETURN(const double min_gbps, min_link_gbps(f));
  tr::LinkProbeOptions options;
  options.timeout = std::min(timeout, options.timeout);
  // Rank 0 only: logs what it measured, then judges.
  auto judge = [&](const std::vector<tr::LinkMeasurement>& links) -> absl::Status {
    const tr::LinkEnvironment env = tr::read_link_environment();
    for (const tr::LinkMeasurement& m : links) {
      std::fprintf(stderr, "%s\n", tr::describe_link(m).c_str());
      for (const std::string& w : tr::link_warnings(m, env)) {
        std::fprintf(stderr, "WARNING: %s\n", w.c_str());
      }
    }
    for (const tr::LinkMeasurement& m : links) {
      const tr::LinkKind kind = tr::link_kind(m.path);
      if (f.require == "rdma" && kind != tr::LinkKind::kRdma && m.path.empty() &&
          m.backend == "mpi") {
        return absl::FailedPreconditionError(absl::StrCat(
            "--require-link rdma: link rank ", m.rank_a, " <-> ", m.rank_b, " runs over MPI, "
            "which does not say which transport it picked; run over UCX instead (--transport "
            "ucx under mpirun, with TANDEM_MASTER_ADDR/PORT), or pass --require-link any"));
      }
      if (f.require == "rdma" && kind != tr::LinkKind::kRdma) {
        return absl::FailedPreconditionError(absl::StrCat(
            "--require-link rdma: link rank ", m.rank_a, " <-> ", m.rank_b, " runs over ",
            std::string(tr::link_kind_name(kind)), m.path.empty() ? "" : " (", m.path,
            m.path.empty() ? "" : ")", ", not RDMA; see the warnings above, or pass "
            "--require-link any to start anyway"));
      }
      if (min_gbps > 0 && m.bandwidth_gbps < min_gbps) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "--min-link-bandwidth %s: link rank %d <-> %d measured %.2f GB/s, below the %.2f "
            "GB/s asked for",
            f.min_bandwidth, m.rank_a, m.rank_b, m.bandwidth_gbps, min_gbps));
      }
    }
    return absl::OkStatus();
  };
  return tr::probe_links(comm, options, judge, /*measure=*/!f.skip);
}

}  // namespace tandem::launcher
