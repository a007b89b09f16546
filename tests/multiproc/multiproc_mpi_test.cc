// The MPI backend across real processes: mpirun -np 2, 3 and 4 on this box
// (ob1 over self, vader and tcp, TCP held to loopback), and an MPI singleton
// started without mpirun. Every run is bounded twice: mpirun's own
// --timeout, and ours, after which mpirun gets SIGTERM (it kills its ranks)
// and then SIGKILL.
#include <gtest/gtest.h>

#include <string>

#include "tests/multiproc/process_group.h"

namespace tandem::testing {
namespace {

const std::map<std::string, std::string> kEnv = {
    {"OMPI_ALLOW_RUN_AS_ROOT", "1"},
    {"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"},
    // No stray mpirun settings from the caller's environment.
    {"OMPI_MCA_pml", "ob1"},
};

bool wait_or_terminate(ProcessGroup& g, std::chrono::seconds timeout) {
  if (g.wait_all(timeout)) return true;
  if (g.child(0).pid > 0) ::kill(g.child(0).pid, SIGTERM);  // mpirun tears its ranks down
  g.wait_all(std::chrono::seconds(5));
  return false;  // the group's destructor SIGKILLs what is left
}

int count_ok(const std::string& out, int world) {
  int ok = 0;
  for (int r = 0; r < world; ++r) {
    if (out.find("RESULT rank " + std::to_string(r) + " OK") != std::string::npos) ++ok;
  }
  return ok;
}

void run_mpirun(int world) {
  ProcessGroup g(make_temp_dir());
  g.spawn({TANDEM_MPIEXEC, "--oversubscribe", "--timeout", "30", "-np", std::to_string(world),
           "--mca", "btl", "self,vader,tcp", "--mca", "btl_tcp_if_include", "lo", "--mca",
           "oob_tcp_if_include", "lo", TANDEM_MPI_WORKER_PATH, "all"},
          kEnv, "mpirun");
  ASSERT_TRUE(wait_or_terminate(g, std::chrono::seconds(40))) << g.describe();
  EXPECT_TRUE(g.exited_ok(0)) << g.describe();
  EXPECT_EQ(count_ok(g.out(0), world), world) << g.describe();
}

TEST(MultiprocMpi, TwoRanks) { run_mpirun(2); }
TEST(MultiprocMpi, ThreeRanks) { run_mpirun(3); }
TEST(MultiprocMpi, FourRanks) { run_mpirun(4); }

TEST(MultiprocMpi, SingletonWithoutMpirun) {
  ProcessGroup g(make_temp_dir());
  std::map<std::string, std::string> env = kEnv;
  g.spawn({TANDEM_MPI_WORKER_PATH, "singleton"}, env, "singleton");
  ASSERT_TRUE(wait_or_terminate(g, std::chrono::seconds(30))) << g.describe();
  EXPECT_TRUE(g.exited_ok(0)) << g.describe();
  EXPECT_EQ(count_ok(g.out(0), 1), 1) << g.describe();
}

}  // namespace
}  // namespace tandem::testing
