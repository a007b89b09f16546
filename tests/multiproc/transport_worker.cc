// One rank of a multi-process transport test. The test (multiproc_test.cc)
// starts N of these with TANDEM_* in the environment; each runs a scenario
// and prints "RESULT <CODE> <message>" as its last line. Exit codes: 0 on OK,
// kExitPeerLost (42) on UNAVAILABLE or DEADLINE_EXCEEDED (what a survivor of
// a dead peer or a dead link must see), 3 on any other error; a crash or an
// abort shows as a signal instead.
#include <cstdio>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "transport/bootstrap/bootstrap.h"
#include "transport/bootstrap/config.h"
#ifdef TANDEM_WORKER_HAVE_UCX
#include "tests/multiproc/ucx_scenarios.h"
#endif

namespace tandem::transport {

namespace {

absl::Status rendezvous(Bootstrap& boot) {
  auto deadline = boot.default_deadline();
  if (boot.rank() == 0) TANDEM_RETURN_IF_ERROR(boot.set("t/from0", "hello from 0", deadline));
  TANDEM_ASSIGN_OR_RETURN(auto all,
                          boot.all_gather("t/names", absl::StrCat("rank-", boot.rank()), deadline));
  for (int r = 0; r < boot.world_size(); ++r) {
    if (all[r] != absl::StrCat("rank-", r)) {
      return absl::InternalError(absl::StrCat("all_gather slot ", r, " holds '", all[r], "'"));
    }
  }
  TANDEM_ASSIGN_OR_RETURN(std::string v, boot.get("t/from0", deadline));
  if (v != "hello from 0") return absl::InternalError("get returned the wrong value");
  TANDEM_RETURN_IF_ERROR(boot.barrier(deadline));
  return boot.barrier(deadline);
}

absl::Status run(const std::string& scenario) {
  TANDEM_ASSIGN_OR_RETURN(BootstrapConfig config, config_from_env());
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Bootstrap> boot, Bootstrap::create(config));
  if (scenario == "rendezvous") return rendezvous(*boot);
#ifdef TANDEM_WORKER_HAVE_UCX
  return run_ucx_scenario(scenario, *boot);
#else
  return absl::InvalidArgumentError(absl::StrCat("unknown scenario '", scenario, "'"));
#endif
}

}  // namespace
}  // namespace tandem::transport

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: transport_worker <scenario>\n");
    return 2;
  }
  absl::Status s = tandem::transport::run(argv[1]);
  std::printf("RESULT %s %s\n", absl::StatusCodeToString(s.code()).c_str(),
              std::string(s.message()).c_str());
  std::fflush(stdout);
  constexpr int kExitPeerLost = 42;
  if (s.ok()) return 0;
  if (absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s)) return kExitPeerLost;
  return 3;
}
