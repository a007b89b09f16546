// The NCCL backend on one device, world size 1: skipped (with a message)
// where there is no GPU; CI only proves that it compiles and links there.
#include "transport/nccl/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <vector>

#include "transport/bootstrap/bootstrap.h"

namespace tandem::transport {
namespace {

using std::chrono::milliseconds;

TEST(NcclCommunicator, WorldOfOneOnDevice0) {
  int n_devices = 0;
  cudaError_t e = cudaGetDeviceCount(&n_devices);
  if (e != cudaSuccess || n_devices == 0) {
    GTEST_SKIP() << "no CUDA device: "
                 << (e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount returned 0");
  }
  BootstrapConfig config{
      .rank = 0, .world_size = 1, .token = "nccl-test", .timeout = milliseconds(10000)};
  auto boot = Bootstrap::create(config);
  ASSERT_TRUE(boot.ok()) << boot.status();
  auto comm = make_nccl_communicator(**boot, 0);
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ((*comm)->backend(), "nccl");
  EXPECT_EQ((*comm)->size(), 1);

  const size_t count = 1000;
  std::vector<float> host(count), back(count);
  for (size_t i = 0; i < count; ++i) host[i] = static_cast<float>(i) * 0.5f;
  void* dev = nullptr;
  void* gathered = nullptr;
  ASSERT_EQ(cudaMalloc(&dev, count * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&gathered, count * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dev, host.data(), count * sizeof(float), cudaMemcpyHostToDevice),
            cudaSuccess);
  auto deadline = [] { return deadline_in(milliseconds(10000)); };
  EXPECT_TRUE((*comm)->all_reduce(dev, count, DataType::kF32, ReduceOp::kSum, deadline()).ok());
  EXPECT_TRUE((*comm)->all_gather(dev, gathered, count, DataType::kF32, deadline()).ok());
  EXPECT_TRUE((*comm)->broadcast(dev, count * sizeof(float), 0, deadline()).ok());
  EXPECT_TRUE((*comm)->barrier(deadline()).ok());
  ASSERT_EQ(cudaMemcpy(back.data(), gathered, count * sizeof(float), cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(back, host);  // a sum over one rank is the identity
  EXPECT_EQ((*comm)->split(std::vector<int>{0}, 1).status().code(),
            absl::StatusCode::kUnimplemented);
  (*comm)->abort(absl::CancelledError("test"));
  EXPECT_EQ((*comm)->barrier(deadline()).code(), absl::StatusCode::kAborted);
  cudaFree(dev);
  cudaFree(gathered);
}

}  // namespace
}  // namespace tandem::transport
