// The local backend's p2p: ordering, size checks, cancellation, deadlines,
// abort and dead peers. Every wait is bounded.
#include "transport/local/local_world.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/transport/test_util.h"

namespace tandem::transport {
namespace {

using std::chrono::milliseconds;
using testing::run_on_ranks;
using testing::test_deadline;

constexpr auto kSlack = milliseconds(1500);

TEST(LocalWorldTest, Basics) {
  auto comms = make_local_world(3);
  ASSERT_EQ(comms.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(comms[i]->rank(), i);
    EXPECT_EQ(comms[i]->size(), 3);
    EXPECT_EQ(comms[i]->backend(), "local");
  }
  int x = 0;
  EXPECT_EQ(comms[0]->isend(&x, 4, 3, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comms[0]->irecv(&x, 4, -1, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comms[0]->isend(nullptr, 4, 1, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(dtype_size(DataType::kBF16), 2u);
  EXPECT_EQ(dtype_name(DataType::kI32), "i32");
}

TEST(LocalWorldTest, MessagesArriveInOrderPerTag) {
  auto comms = make_local_world(2);
  constexpr int kN = 200;
  run_on_ranks(comms, [&](Communicator& comm) {
    if (comm.rank() == 0) {
      for (int i = 0; i < kN; ++i) {
        const int32_t a = i, b = 1000 + i;
        ASSERT_TRUE(comm.send(&a, 4, 1, 5, test_deadline()).ok());
        ASSERT_TRUE(comm.send(&b, 4, 1, 6, test_deadline()).ok());
      }
    } else {
      // Tag 6 first: tag 5's messages wait, in order, meanwhile. Half of the
      // receives are posted before the messages can have arrived.
      std::vector<int32_t> got(kN);
      std::vector<std::unique_ptr<Request>> pending;
      for (int i = 0; i < kN; ++i) {
        auto r = comm.irecv(&got[i], 4, 0, 6);
        ASSERT_TRUE(r.ok());
        pending.push_back(std::move(*r));
      }
      for (int i = 0; i < kN; ++i) {
        ASSERT_TRUE(pending[i]->wait(test_deadline()).ok());
        EXPECT_EQ(got[i], 1000 + i);
      }
      for (int i = 0; i < kN; ++i) {
        int32_t v = -1;
        ASSERT_TRUE(comm.recv(&v, 4, 0, 5, test_deadline()).ok());
        EXPECT_EQ(v, i);
      }
    }
  });
}

TEST(LocalWorldTest, SelfSendAndZeroBytes) {
  auto comms = make_local_world(1);
  const double out = 2.5;
  double in = 0;
  ASSERT_TRUE(comms[0]->send(&out, 8, 0, 1, test_deadline()).ok());
  ASSERT_TRUE(comms[0]->recv(&in, 8, 0, 1, test_deadline()).ok());
  EXPECT_EQ(in, 2.5);
  ASSERT_TRUE(comms[0]->send(nullptr, 0, 0, 2, test_deadline()).ok());
  ASSERT_TRUE(comms[0]->recv(nullptr, 0, 0, 2, test_deadline()).ok());
}

TEST(LocalWorldTest, SizeMismatchFailsTheReceiver) {
  auto comms = make_local_world(2);
  const int64_t big = 42;
  int32_t small = 7;
  EXPECT_TRUE(comms[0]->send(&big, 8, 1, 3, test_deadline()).ok());
  const absl::Status status = comms[1]->recv(&small, 4, 0, 3, test_deadline());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(small, 7);  // untouched
  // A posted receive that then gets the wrong size fails the same way.
  auto request = comms[1]->irecv(&small, 4, 0, 4);
  ASSERT_TRUE(request.ok());
  EXPECT_TRUE(comms[0]->send(&big, 8, 1, 4, test_deadline()).ok());
  EXPECT_EQ((*request)->wait(test_deadline()).code(), absl::StatusCode::kInvalidArgument);
}

TEST(LocalWorldTest, DeadlineExceededThenWaitAgain) {
  auto comms = make_local_world(2);
  int32_t v = 0;
  auto request = comms[1]->irecv(&v, 4, 0, 9);
  ASSERT_TRUE(request.ok());
  const auto start = Clock::now();
  const absl::Status status = (*request)->wait(deadline_in(milliseconds(100)));
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_GE(Clock::now() - start, milliseconds(100));
  EXPECT_LT(Clock::now() - start, milliseconds(100) + kSlack);
  EXPECT_FALSE((*request)->test());
  const int32_t x = 17;
  ASSERT_TRUE(comms[0]->send(&x, 4, 1, 9, test_deadline()).ok());
  EXPECT_TRUE((*request)->wait(test_deadline()).ok());
  EXPECT_TRUE((*request)->test());
  EXPECT_EQ(v, 17);
}

TEST(LocalWorldTest, BlockingRecvTimesOutAndCancels) {
  auto comms = make_local_world(2);
  int32_t v = -1;
  const auto start = Clock::now();
  EXPECT_EQ(comms[1]->recv(&v, 4, 0, 1, deadline_in(milliseconds(50))).code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(Clock::now() - start, milliseconds(50) + kSlack);
  // The timed-out receive was cancelled: the next message goes to the next
  // receive, and the old buffer is never written.
  const int32_t x = 5;
  ASSERT_TRUE(comms[0]->send(&x, 4, 1, 1, test_deadline()).ok());
  int32_t w = 0;
  ASSERT_TRUE(comms[1]->recv(&w, 4, 0, 1, test_deadline()).ok());
  EXPECT_EQ(w, 5);
  EXPECT_EQ(v, -1);
}

TEST(LocalWorldTest, AbortFailsPendingAndFutureOperations) {
  auto comms = make_local_world(2);
  int32_t v = 0;
  absl::Status waited;
  std::chrono::nanoseconds took{};
  std::thread waiter([&] {
    const auto start = Clock::now();
    waited = comms[0]->recv(&v, 4, 1, 0, test_deadline());
    took = Clock::now() - start;
  });
  std::this_thread::sleep_for(milliseconds(50));
  comms[0]->abort(absl::CancelledError("shutting down"));
  waiter.join();
  EXPECT_EQ(waited.code(), absl::StatusCode::kAborted) << waited;
  EXPECT_NE(waited.message().find("shutting down"), std::string_view::npos) << waited;
  EXPECT_LT(took, milliseconds(50) + kSlack);
  EXPECT_EQ(comms[0]->isend(&v, 4, 1, 0).status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(comms[0]->irecv(&v, 4, 1, 0).status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(comms[0]->barrier(test_deadline()).code(), absl::StatusCode::kAborted);
  comms[0]->abort(absl::InternalError("twice is harmless"));
}

TEST(LocalWorldTest, PeerAbortGivesUnavailable) {
  auto comms = make_local_world(3);
  int32_t v = 0;
  absl::Status waited;
  std::chrono::nanoseconds took{};
  std::thread waiter([&] {
    const auto start = Clock::now();
    waited = comms[0]->recv(&v, 4, 1, 0, test_deadline());
    took = Clock::now() - start;
  });
  std::this_thread::sleep_for(milliseconds(50));
  comms[1]->abort(absl::InternalError("out of memory"));
  waiter.join();
  EXPECT_EQ(waited.code(), absl::StatusCode::kUnavailable) << waited;
  EXPECT_NE(waited.message().find("peer 1 aborted: out of memory"), std::string_view::npos)
      << waited;
  EXPECT_LT(took, milliseconds(50) + kSlack);
  EXPECT_EQ(comms[0]->isend(&v, 4, 1, 0).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(comms[0]->irecv(&v, 4, 1, 0).status().code(), absl::StatusCode::kUnavailable);
  // The other links still work.
  const int32_t x = 3;
  ASSERT_TRUE(comms[2]->send(&x, 4, 0, 0, test_deadline()).ok());
  ASSERT_TRUE(comms[0]->recv(&v, 4, 2, 0, test_deadline()).ok());
  EXPECT_EQ(v, 3);
}

TEST(LocalWorldTest, MessagesSentBeforeDeathAreDelivered) {
  auto comms = make_local_world(2);
  const int32_t x = 11;
  ASSERT_TRUE(comms[1]->send(&x, 4, 0, 0, test_deadline()).ok());
  comms[1].reset();  // destroying a communicator is a death too
  int32_t v = 0;
  ASSERT_TRUE(comms[0]->recv(&v, 4, 1, 0, test_deadline()).ok());
  EXPECT_EQ(v, 11);
  EXPECT_EQ(comms[0]->recv(&v, 4, 1, 0, test_deadline()).code(), absl::StatusCode::kUnavailable);
}

TEST(LocalWorldTest, CollectiveFailsWhenPeerAborts) {
  auto comms = make_local_world(2);
  std::vector<float> data(100000, 1.0f);  // the ring path
  absl::Status status;
  std::chrono::nanoseconds took{};
  std::thread rank0([&] {
    const auto start = Clock::now();
    status = comms[0]->all_reduce(data.data(), data.size(), DataType::kF32, ReduceOp::kSum,
                                  test_deadline());
    took = Clock::now() - start;
  });
  std::this_thread::sleep_for(milliseconds(50));
  comms[1]->abort(absl::InternalError("crash"));
  rank0.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_LT(took, milliseconds(50) + kSlack);
}

// One rank of four dies in the middle of an all_reduce: nobody hangs, its
// direct partners hear UNAVAILABLE at once, the others fail at the latest at
// their deadline; and a rank's own abort ends its collective with ABORTED.
TEST(LocalWorldTest, AbortDuringACollectiveOfFour) {
  for (const size_t count : {size_t{5}, size_t{300000}}) {
    auto comms = make_local_world(4);
    std::vector<absl::Status> statuses(4);
    constexpr auto kWait = milliseconds(1000);
    std::vector<std::thread> threads;
    for (int r : {0, 1, 3}) {
      threads.emplace_back([&, r] {
        std::vector<float> data(count, 1.0f);
        const auto start = Clock::now();
        statuses[r] =
            comms[r]->all_reduce(data.data(), count, DataType::kF32, ReduceOp::kSum, start + kWait);
        EXPECT_LT(Clock::now() - start, kWait + kSlack) << "rank " << r;
      });
    }
    std::this_thread::sleep_for(milliseconds(50));
    comms[2]->abort(absl::InternalError("killed"));
    for (auto& t : threads) t.join();
    for (int r : {0, 1, 3}) EXPECT_FALSE(statuses[r].ok()) << "rank " << r;
    // Rank 3 receives from rank 2 in both algorithms.
    EXPECT_EQ(statuses[3].code(), absl::StatusCode::kUnavailable) << statuses[3];
  }
  auto comms = make_local_world(2);
  absl::Status status;
  std::thread rank0([&] {
    float x = 1;
    status = comms[0]->all_reduce(&x, 1, DataType::kF32, ReduceOp::kSum, test_deadline());
  });
  std::this_thread::sleep_for(milliseconds(50));
  const auto start = Clock::now();
  comms[0]->abort(absl::CancelledError("stop"));
  rank0.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted) << status;
  EXPECT_LT(Clock::now() - start, kSlack);
}

TEST(LocalWorldTest, CollectivesHonourTheDeadlineWhenARankNeverJoins) {
  for (const size_t count : {size_t{3}, size_t{100000}}) {
    // Rank 3's communicator stays alive but idle.
    std::vector<std::unique_ptr<Communicator>> idle;
    auto all = make_local_world(4);
    idle.push_back(std::move(all[3]));
    all.pop_back();
    constexpr auto kWait = milliseconds(200);
    run_on_ranks(all, [&](Communicator& comm) {
      std::vector<float> data(count, 1.0f);
      std::vector<float> gathered(count * 4);
      for (int op = 0; op < 4; ++op) {
        const auto start = Clock::now();
        const Deadline deadline = start + kWait;
        absl::Status status;
        switch (op) {
          case 0:
            status = comm.all_reduce(data.data(), count, DataType::kF32, ReduceOp::kSum, deadline);
            break;
          case 1:
            status = comm.all_gather(data.data(), gathered.data(), count, DataType::kF32, deadline);
            break;
          case 2:
            status = comm.broadcast(data.data(), count * 4, 3, deadline);
            break;
          case 3:
            status = comm.barrier(deadline);
            break;
        }
        EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded)
            << "op " << op << " count " << count << ": " << status;
        EXPECT_LT(Clock::now() - start, kWait + kSlack) << "op " << op;
      }
    });
  }
}

}  // namespace
}  // namespace tandem::transport
