// The default collectives over the local backend, for 1..8 ranks, awkward
// element counts (both sides of every size crossover) and every dtype, against
// a sequential reference. Integer-valued data makes every summation order
// exact, so results are compared bit for bit; random data checks that all
// ranks hold identical bits when the order does matter.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/transport/test_util.h"
#include "transport/local/local_world.h"

namespace tandem::transport {
namespace {

using testing::get_value;
using testing::put_value;
using testing::run_on_ranks;
using testing::test_deadline;

constexpr size_t kCounts[] = {1, 3, 1023, 65537, (1 << 20) + 5};
constexpr DataType kReducible[] = {DataType::kF32, DataType::kF16, DataType::kBF16, DataType::kI32};
constexpr DataType kAllTypes[] = {DataType::kF32, DataType::kF16, DataType::kBF16, DataType::kI32,
                                  DataType::kU8};

// Small integers: sums of 8 stay exact even in bf16 (8 significant bits).
double exact_value(int rank, size_t i) {
  return static_cast<double>(static_cast<int>((rank * 7 + i * 13) % 17) - 8);
}

std::vector<std::byte> make_buffer(DataType type, size_t count) {
  return std::vector<std::byte>(count * dtype_size(type));
}

void check_all_reduce_exact(int n, size_t count, DataType type) {
  SCOPED_TRACE(::testing::Message() << n << " ranks, " << count << " x " << dtype_name(type));
  auto comms = make_local_world(n);
  std::vector<std::vector<std::byte>> bufs(n);
  std::vector<std::byte> want = make_buffer(type, count);
  for (int r = 0; r < n; ++r) {
    bufs[r] = make_buffer(type, count);
    for (size_t i = 0; i < count; ++i) put_value(bufs[r].data(), type, i, exact_value(r, i));
  }
  for (size_t i = 0; i < count; ++i) {
    double sum = 0;
    for (int r = 0; r < n; ++r) sum += exact_value(r, i);
    put_value(want.data(), type, i, sum);
  }
  run_on_ranks(comms, [&](Communicator& comm) {
    const absl::Status status =
        comm.all_reduce(bufs[comm.rank()].data(), count, type, ReduceOp::kSum, test_deadline());
    EXPECT_TRUE(status.ok()) << status;
  });
  for (int r = 0; r < n; ++r) {
    EXPECT_TRUE(bufs[r] == want) << "rank " << r;
  }
}

TEST(AllReduceTest, ExactForEveryRankCountAndType) {
  for (int n = 1; n <= 8; ++n) {
    for (size_t count : kCounts) {
      for (DataType type : kReducible) check_all_reduce_exact(n, count, type);
    }
  }
}

// Random data: every rank must hold the same bits (the layers above rely on
// it for identical greedy tokens), within rounding of the exact sum.
TEST(AllReduceTest, RandomDataIsBitwiseIdenticalOnAllRanks) {
  for (int n : {2, 3, 5, 8}) {
    for (size_t count : {size_t{1023}, size_t{65537}}) {
      for (DataType type : {DataType::kF32, DataType::kF16, DataType::kBF16}) {
        SCOPED_TRACE(::testing::Message() << n << " ranks, " << count << " x " << dtype_name(type));
        std::mt19937 rng(static_cast<uint32_t>(n * 1000 + count));
        std::uniform_real_distribution<double> dist(-1.0, 1.0);
        auto comms = make_local_world(n);
        std::vector<std::vector<std::byte>> bufs(n);
        std::vector<double> sum(count, 0.0);
        for (int r = 0; r < n; ++r) {
          bufs[r] = make_buffer(type, count);
          for (size_t i = 0; i < count; ++i) {
            put_value(bufs[r].data(), type, i, dist(rng));
            sum[i] += get_value(bufs[r].data(), type, i);
          }
        }
        run_on_ranks(comms, [&](Communicator& comm) {
          EXPECT_TRUE(comm.all_reduce(bufs[comm.rank()].data(), count, type, ReduceOp::kSum,
                                      test_deadline())
                          .ok());
        });
        const double eps = type == DataType::kF32   ? 0x1p-23
                           : type == DataType::kF16 ? 0x1p-10
                                                    : 0x1p-7;
        const double tolerance = 2.0 * n * n * eps;  // n roundings of partials up to n
        for (int r = 1; r < n; ++r) EXPECT_TRUE(bufs[r] == bufs[0]) << "rank " << r;
        double worst = 0;
        for (size_t i = 0; i < count; ++i) {
          worst = std::max(worst, std::abs(get_value(bufs[0].data(), type, i) - sum[i]));
        }
        EXPECT_LT(worst, tolerance);
      }
    }
  }
}

TEST(AllReduceTest, RejectsBadArguments) {
  auto comms = make_local_world(1);
  uint8_t bytes[4] = {};
  EXPECT_EQ(comms[0]->all_reduce(bytes, 4, DataType::kU8, ReduceOp::kSum, test_deadline()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      comms[0]->all_reduce(nullptr, 4, DataType::kF32, ReduceOp::kSum, test_deadline()).code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(
      comms[0]->all_reduce(nullptr, 0, DataType::kF32, ReduceOp::kSum, test_deadline()).ok());
}

void check_all_gather(int n, size_t count, DataType type, bool in_place) {
  SCOPED_TRACE(::testing::Message() << n << " ranks, " << count << " x " << dtype_name(type)
                                    << (in_place ? " in place" : ""));
  auto comms = make_local_world(n);
  const size_t block = count * dtype_size(type);
  std::vector<std::vector<std::byte>> sends(n), recvs(n);
  std::vector<std::byte> want(block * n);
  for (int r = 0; r < n; ++r) {
    sends[r] = make_buffer(type, count);
    for (size_t i = 0; i < count; ++i) put_value(sends[r].data(), type, i, exact_value(r, i));
    std::memcpy(want.data() + r * block, sends[r].data(), block);
    recvs[r].assign(block * n, std::byte{0x5a});
    if (in_place) std::memcpy(recvs[r].data() + r * block, sends[r].data(), block);
  }
  run_on_ranks(comms, [&](Communicator& comm) {
    const int r = comm.rank();
    const void* send = in_place ? recvs[r].data() + r * block : sends[r].data();
    const absl::Status status =
        comm.all_gather(send, recvs[r].data(), count, type, test_deadline());
    EXPECT_TRUE(status.ok()) << status;
  });
  for (int r = 0; r < n; ++r) EXPECT_TRUE(recvs[r] == want) << "rank " << r;
}

TEST(AllGatherTest, EveryRankCountAndType) {
  for (int n = 1; n <= 8; ++n) {
    for (size_t count : kCounts) {
      for (DataType type : kAllTypes) {
        // The largest size once per rank count: it is the ring's bandwidth
        // path and the same code for every type.
        if (count > (1 << 20) && type != DataType::kF16) continue;
        check_all_gather(n, count, type, /*in_place=*/false);
      }
    }
    check_all_gather(n, 1023, DataType::kF32, /*in_place=*/true);
    check_all_gather(n, 65537, DataType::kBF16, /*in_place=*/true);
  }
}

TEST(BroadcastTest, EveryRankCountAndRoot) {
  for (int n = 1; n <= 8; ++n) {
    for (size_t count : kCounts) {
      for (DataType type : kAllTypes) {
        if (count > (1 << 20) && type != DataType::kI32) continue;
        const size_t bytes = count * dtype_size(type);
        for (int root = 0; root < n; ++root) {
          if (count > (1 << 16) && root != n - 1) continue;
          SCOPED_TRACE(::testing::Message() << n << " ranks, " << bytes << " bytes, root " << root);
          auto comms = make_local_world(n);
          std::vector<std::vector<std::byte>> bufs(n);
          for (int r = 0; r < n; ++r) {
            bufs[r] = make_buffer(type, count);
            for (size_t i = 0; i < count; ++i)
              put_value(bufs[r].data(), type, i, exact_value(r, i));
          }
          const std::vector<std::byte> want = bufs[root];
          run_on_ranks(comms, [&](Communicator& comm) {
            const absl::Status status =
                comm.broadcast(bufs[comm.rank()].data(), bytes, root, test_deadline());
            EXPECT_TRUE(status.ok()) << status;
          });
          for (int r = 0; r < n; ++r) EXPECT_TRUE(bufs[r] == want) << "rank " << r;
        }
      }
    }
  }
  auto comms = make_local_world(2);
  char c = 0;
  EXPECT_EQ(comms[0]->broadcast(&c, 1, 2, test_deadline()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BarrierTest, NoRankLeavesBeforeAllEntered) {
  for (int n = 1; n <= 8; ++n) {
    auto comms = make_local_world(n);
    std::atomic<int> entered{0};
    run_on_ranks(comms, [&](Communicator& comm) {
      for (int round = 0; round < 5; ++round) {
        std::this_thread::sleep_for(std::chrono::milliseconds(comm.rank() == round % n ? 20 : 0));
        entered.fetch_add(1);
        ASSERT_TRUE(comm.barrier(test_deadline()).ok());
        EXPECT_GE(entered.load(), n * (round + 1));
        // A second barrier keeps fast ranks from entering the next round
        // before every rank has checked this one.
        ASSERT_TRUE(comm.barrier(test_deadline()).ok());
      }
    });
  }
}

// Many collectives of different kinds back to back: their tags keep them
// apart even though ranks run ahead of one another.
TEST(CollectivesTest, MixedSequence) {
  for (int n : {3, 4, 7}) {
    auto comms = make_local_world(n);
    run_on_ranks(comms, [&](Communicator& comm) {
      const int r = comm.rank();
      for (int iter = 0; iter < 30; ++iter) {
        const size_t count = 1 + (iter * 977) % 40000;
        std::vector<float> x(count, static_cast<float>(r + iter));
        ASSERT_TRUE(
            comm.all_reduce(x.data(), count, DataType::kF32, ReduceOp::kSum, test_deadline()).ok());
        const float want = static_cast<float>(n * (n - 1) / 2 + n * iter);
        EXPECT_EQ(x[0], want);
        EXPECT_EQ(x[count - 1], want);
        int32_t mine = r * 100 + iter;
        std::vector<int32_t> all(n);
        ASSERT_TRUE(comm.all_gather(&mine, all.data(), 1, DataType::kI32, test_deadline()).ok());
        for (int i = 0; i < n; ++i) EXPECT_EQ(all[i], i * 100 + iter);
        int32_t b = r == iter % n ? iter : -1;
        ASSERT_TRUE(comm.broadcast(&b, 4, iter % n, test_deadline()).ok());
        EXPECT_EQ(b, iter);
        if (iter % 3 == 0) {
          ASSERT_TRUE(comm.barrier(test_deadline()).ok());
        }
      }
    });
  }
}

}  // namespace
}  // namespace tandem::transport
