#include "transport/mpi/mpi_communicator.h"

#include <mpi.h>
#include <sched.h>

#include <atomic>
#include <climits>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "transport/mpi/mpi_handles.h"
#include "transport/request_pool.h"

namespace tandem::transport {
namespace {

// How long a dying request keeps testing its MPI request. A receive that
// has matched a message only waits for its data to land; Open MPI's ob1
// cannot cancel a send, which completes only when the peer receives it, so a
// send gets a short grace and is then left to MPI (MPI_Request_free).
constexpr auto kRecvCancelGrace = std::chrono::seconds(2);
constexpr auto kSendCancelGrace = std::chrono::milliseconds(100);
// More duplicates than this (a very small MPI_TAG_UB) is refused.
constexpr int kMaxComms = 1024;
// Operations whose memory is kept for reuse: a warm send or receive
// allocates nothing (more at once than this still works, and allocates).
constexpr size_t kPooledOps = 64;

// One send or receive, owned by its MpiRequest; recycled through the
// communicator's free list.
struct OpState {
  MPI_Request req = MPI_REQUEST_NULL;  // non-null while MPI holds the operation
  int peer = 0;
  bool is_recv = false;
  size_t bytes = 0;
  bool done = false;  // completion as the user sees it
  absl::Status status;
  // Receives only: they match lazily (see irecv), oldest first per key.
  void* data = nullptr;
  uint64_t key = 0;
  bool matched = false;
  int64_t actual = -1;        // the matched message's size when it differs
  std::vector<char> scratch;  // where such a message is drained to
  // The communicator's list of ops not yet released.
  OpState* live_prev = nullptr;
  OpState* live_next = nullptr;
};

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(std::shared_ptr<mpi::Runtime> runtime)
      : runtime_(std::move(runtime)), mu_(runtime_->mu()) {}
  ~MpiCommunicator() override;

  absl::Status init();

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string_view backend() const override { return "mpi"; }
  absl::StatusOr<std::unique_ptr<Request>> isend(const void* data, size_t bytes, int peer,
                                                 uint32_t tag) override;
  absl::StatusOr<std::unique_ptr<Request>> irecv(void* data, size_t bytes, int peer,
                                                 uint32_t tag) override;
  void abort(const absl::Status& reason) override;

  absl::Status wait(OpState& op, Deadline deadline);
  bool test(OpState& op);
  void release(OpState* op);

 private:
  absl::Status check(int peer, size_t bytes) const;
  // Our 32-bit tag as (duplicate communicator, MPI tag within MPI_TAG_UB).
  MPI_Comm comm_for(uint32_t tag) const { return comms_[tag >> tag_bits_].get(); }
  int mpi_tag(uint32_t tag) const { return static_cast<int>(tag & tag_mask_); }
  absl::StatusOr<std::unique_ptr<Request>> start(OpState* op, int rc, const char* call);
  // With mu_ held: a cleared OpState, from the free list when it has one.
  OpState* new_op_locked();
  void recycle_locked(OpState* op);
  void link_live_locked(OpState* op);
  void unlink_live_locked(OpState* op);
  // With mu_ held: completes `op` if it can; returns whether it is done.
  bool poll_locked(OpState& op);
  absl::Status completion_status(OpState& op, int rc);
  // With mu_ held: hands the messages waiting for `key` to its oldest
  // unmatched receives (MPI_Improbe + MPI_Imrecv).
  void match_locked(uint64_t key);
  void unqueue_locked(OpState& op);

  std::shared_ptr<mpi::Runtime> runtime_;  // outlives comms_: declared first
  std::mutex& mu_;                         // the runtime's: MPI is used serialized
  int rank_ = 0, size_ = 1;
  int tag_bits_ = 31;
  uint32_t tag_mask_ = 0;
  std::vector<mpi::Comm> comms_;
  OpState* live_ = nullptr;         // ops not yet released (a list through live_next)
  std::vector<OpState*> free_ops_;  // released ops, for reuse
  // Unmatched receives, in posting order (few at a time: a linear scan per
  // (peer, 32-bit tag) key keeps each key's order).
  std::vector<OpState*> pending_;
  std::atomic<bool> aborted_{false};
  absl::Status abort_status_;
};

class MpiRequest final : public Request, public PooledRequestMemory<MpiRequest, kPooledOps> {
 public:
  MpiRequest(MpiCommunicator* comm, OpState* op) : comm_(comm), op_(op) {}
  ~MpiRequest() override { comm_->release(op_); }
  absl::Status wait(Deadline deadline) override { return comm_->wait(*op_, deadline); }
  bool test() override { return comm_->test(*op_); }

 private:
  MpiCommunicator* comm_;
  OpState* op_;
};

absl::Status MpiCommunicator::check(int peer, size_t bytes) const {
  if (peer < 0 || peer >= size_) {
    return absl::InvalidArgumentError(absl::StrCat("peer ", peer, " is not in [0, ", size_, ")"));
  }
  if (bytes > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrCat("a message of ", bytes, " bytes is over MPI's int count (", INT_MAX, ")"));
  }
  return absl::OkStatus();
}

absl::Status MpiCommunicator::completion_status(OpState& op, int rc) {
  if (rc != MPI_SUCCESS) {
    return mpi::mpi_error(absl::StrCat(op.is_recv ? "receive from" : "send to", " rank ", op.peer),
                          rc);
  }
  if (op.actual >= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rank ", rank_, " expected ", op.bytes, " bytes from rank ", op.peer, ", got ", op.actual));
  }
  return absl::OkStatus();
}

void MpiCommunicator::match_locked(uint64_t key) {
  const uint32_t tag = static_cast<uint32_t>(key);
  for (size_t i = 0; i < pending_.size();) {
    OpState& op = *pending_[i];
    if (op.key != key) {
      ++i;
      continue;
    }
    int flag = 0;
    MPI_Message message = MPI_MESSAGE_NULL;
    MPI_Status st{};
    int rc = MPI_Improbe(op.peer, mpi_tag(tag), comm_for(tag), &flag, &message, &st);
    if (rc != MPI_SUCCESS) {
      op.done = true;
      op.status = mpi::mpi_error(absl::StrCat("MPI_Improbe for rank ", op.peer), rc);
    } else if (!flag) {
      return;  // this key's later receives wait behind this one
    } else {
      int count = MPI_UNDEFINED;
      MPI_Get_count(&st, MPI_BYTE, &count);
      void* into = op.data;
      if (count == MPI_UNDEFINED || count != static_cast<int>(op.bytes)) {
        // Drain it aside: receiving it short would be MPI_ERR_TRUNCATE, and
        // Open MPI 4.1's RDMA-get path then writes the whole message into
        // the short buffer anyway.
        op.actual = count == MPI_UNDEFINED ? INT64_MAX : count;
        op.scratch.resize(count == MPI_UNDEFINED ? 0 : static_cast<size_t>(count));
        into = op.scratch.data();
      }
      op.matched = true;
      rc = MPI_Imrecv(into, count == MPI_UNDEFINED ? 0 : count, MPI_BYTE, &message, &op.req);
      if (rc != MPI_SUCCESS) {
        op.done = true;
        op.status = mpi::mpi_error(absl::StrCat("MPI_Imrecv from rank ", op.peer), rc);
      }
    }
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
  }
}

void MpiCommunicator::unqueue_locked(OpState& op) {
  if (!op.is_recv || op.matched) return;
  std::erase(pending_, &op);
}

OpState* MpiCommunicator::new_op_locked() {
  if (free_ops_.empty()) return new OpState;
  OpState* op = free_ops_.back();
  free_ops_.pop_back();
  return op;
}

void MpiCommunicator::recycle_locked(OpState* op) {
  std::vector<char> scratch = std::move(op->scratch);
  scratch.clear();  // keeps its capacity for the next short message
  *op = OpState{};
  op->scratch = std::move(scratch);
  if (free_ops_.size() < free_ops_.capacity()) {
    free_ops_.push_back(op);
  } else {
    delete op;
  }
}

void MpiCommunicator::link_live_locked(OpState* op) {
  op->live_prev = nullptr;
  op->live_next = live_;
  if (live_ != nullptr) live_->live_prev = op;
  live_ = op;
}

void MpiCommunicator::unlink_live_locked(OpState* op) {
  if (op->live_prev != nullptr) op->live_prev->live_next = op->live_next;
  if (op->live_next != nullptr) op->live_next->live_prev = op->live_prev;
  if (live_ == op) live_ = op->live_next;
  op->live_prev = op->live_next = nullptr;
}

bool MpiCommunicator::poll_locked(OpState& op) {
  if (op.done) return true;
  if (aborted_) {
    // abort() settled every live op; this covers one that raced with it.
    op.done = true;
    op.status = abort_status_;
    unqueue_locked(op);
    return true;
  }
  if (op.is_recv && !op.matched) {
    match_locked(op.key);
    if (op.done) return true;
    if (!op.matched) return false;
  }
  int flag = 0;
  int rc = MPI_Test(&op.req, &flag, MPI_STATUS_IGNORE);
  if (rc == MPI_SUCCESS && !flag) return false;
  // Complete, or failed (Open MPI frees a failed request and nulls it).
  op.done = true;
  op.status = completion_status(op, rc);
  return true;
}

absl::StatusOr<std::unique_ptr<Request>> MpiCommunicator::start(OpState* op, int rc,
                                                                const char* call) {
  if (rc != MPI_SUCCESS) {
    absl::Status s = mpi::mpi_error(absl::StrCat(call, " with rank ", op->peer), rc);
    recycle_locked(op);
    return s;
  }
  link_live_locked(op);
  return std::make_unique<MpiRequest>(this, op);
}

absl::StatusOr<std::unique_ptr<Request>> MpiCommunicator::isend(const void* data, size_t bytes,
                                                                int peer, uint32_t tag) {
  TANDEM_RETURN_IF_ERROR(check(peer, bytes));
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_) return abort_status_;
  OpState* op = new_op_locked();
  op->peer = peer;
  op->bytes = bytes;
  int rc = MPI_Isend(data, static_cast<int>(bytes), MPI_BYTE, peer, mpi_tag(tag), comm_for(tag),
                     &op->req);
  return start(op, rc, "MPI_Isend");
}

absl::StatusOr<std::unique_ptr<Request>> MpiCommunicator::irecv(void* data, size_t bytes, int peer,
                                                                uint32_t tag) {
  TANDEM_RETURN_IF_ERROR(check(peer, bytes));
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_) return abort_status_;
  // A receive matches lazily, oldest first per (peer, tag), with a matched
  // probe (MPI_Improbe: no race with other threads, unlike MPI_Probe), so
  // the message's size is known before a byte lands: a message of another
  // size is drained aside and reported as INVALID_ARGUMENT. Posting the
  // exact count instead and relying on MPI_ERR_TRUNCATE corrupts memory in
  // Open MPI 4.1.4 (ob1's RDMA-get path copies the whole message).
  OpState* op = new_op_locked();
  op->peer = peer;
  op->is_recv = true;
  op->bytes = bytes;
  op->data = data;
  op->key = (static_cast<uint64_t>(static_cast<uint32_t>(peer)) << 32) | tag;
  pending_.push_back(op);
  link_live_locked(op);
  match_locked(op->key);
  return std::make_unique<MpiRequest>(this, op);
}

absl::Status MpiCommunicator::wait(OpState& op, Deadline deadline) {
  for (int idle = 0;; ++idle) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (poll_locked(op)) return op.status;
    }
    if (Clock::now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(op.is_recv ? "receive from" : "send to", " rank ", op.peer, " timed out"));
    }
    // Busy polling is the fast path; on a crowded machine, step aside (and
    // let other threads at the lock).
    if (idle > 64) sched_yield();
  }
}

bool MpiCommunicator::test(OpState& op) {
  std::lock_guard<std::mutex> lock(mu_);
  return poll_locked(op);
}

void MpiCommunicator::release(OpState* op) {
  std::unique_lock<std::mutex> lock(mu_);
  unlink_live_locked(op);
  unqueue_locked(*op);
  if (op->req != MPI_REQUEST_NULL) {
    // Still in flight (or failed by abort() while MPI held it). A matched
    // receive cannot be cancelled, but its data is on the way; a send is
    // cancelled where MPI can. Test until MPI hands it back, letting go of
    // the lock between tests.
    if (!op->is_recv) MPI_Cancel(&op->req);
    auto grace =
        op->is_recv ? Clock::duration(kRecvCancelGrace) : Clock::duration(kSendCancelGrace);
    auto until = Clock::now() + grace;
    while (op->req != MPI_REQUEST_NULL && Clock::now() < until) {
      int flag = 0;
      if (MPI_Test(&op->req, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS || flag) break;
      lock.unlock();
      sched_yield();
      lock.lock();
    }
    if (op->req != MPI_REQUEST_NULL) {
      // Left to MPI, which frees it when it completes and may still touch
      // the buffer until then (see README). A receive's OpState may own
      // that buffer (scratch): it is leaked on purpose.
      MPI_Request_free(&op->req);
      if (op->is_recv) return;
    }
  }
  recycle_locked(op);
}

void MpiCommunicator::abort(const absl::Status& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_) return;
  // Never MPI_Abort: that would kill every rank of the job.
  abort_status_ = absl::AbortedError(absl::StrCat("communicator aborted: ", reason.ToString()));
  aborted_ = true;
  for (OpState* op = live_; op != nullptr; op = op->live_next) {
    if (op->done) continue;
    op->done = true;
    op->status = abort_status_;
    unqueue_locked(*op);
    if (!op->is_recv && op->req != MPI_REQUEST_NULL) MPI_Cancel(&op->req);
  }
}

MpiCommunicator::~MpiCommunicator() {
  // Requests must not outlive their communicator; if some did, hand their
  // MPI requests over so MPI can free them, but they are the caller's bug.
  std::lock_guard<std::mutex> lock(mu_);
  for (OpState* op = live_; op != nullptr; op = op->live_next) {
    if (op->req == MPI_REQUEST_NULL) continue;
    if (!op->is_recv) MPI_Cancel(&op->req);
    MPI_Request_free(&op->req);
  }
  pending_.clear();
  for (OpState* op : free_ops_) delete op;
  comms_.clear();  // MPI_Comm_free, under the lock like every MPI call
}

absl::Status MpiCommunicator::init() {
  std::lock_guard<std::mutex> lock(mu_);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  // Tags are 32 bits; MPI guarantees only MPI_TAG_UB (2^31 - 1 with ob1,
  // 2^23 - 1 with pml ucx). The bits above it pick one of 2^(32 - bits)
  // duplicates of the world, so every tag still matches exactly.
  int* ub = nullptr;
  int found = 0;
  int rc = MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &found);
  if (rc != MPI_SUCCESS) return mpi::mpi_error("MPI_Comm_get_attr(MPI_TAG_UB)", rc);
  long long tag_ub = (found && ub != nullptr) ? *ub : 32767;  // the standard's minimum
  tag_bits_ = 0;
  while (tag_bits_ < 31 && (1LL << (tag_bits_ + 1)) - 1 <= tag_ub) ++tag_bits_;
  tag_mask_ = (1u << tag_bits_) - 1;
  const int n_comms = 1 << (32 - tag_bits_);
  if (n_comms > kMaxComms) {
    return absl::FailedPreconditionError(absl::StrCat("MPI_TAG_UB is ", tag_ub,
                                                      ": 32-bit tags would need ", n_comms,
                                                      " communicators (at most ", kMaxComms, ")"));
  }
  free_ops_.reserve(kPooledOps);
  pending_.reserve(kPooledOps);
  comms_.reserve(n_comms);
  for (int i = 0; i < n_comms; ++i) {
    MPI_Comm dup = MPI_COMM_NULL;
    rc = MPI_Comm_dup(MPI_COMM_WORLD, &dup);
    if (rc != MPI_SUCCESS) return mpi::mpi_error("MPI_Comm_dup", rc);
    comms_.emplace_back(dup);
    rc = MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
    if (rc != MPI_SUCCESS) return mpi::mpi_error("MPI_Comm_set_errhandler", rc);
  }
  return absl::OkStatus();
}

}  // namespace

bool launched_by_mpirun() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr;
}

absl::StatusOr<std::unique_ptr<Communicator>> make_mpi_communicator() {
  TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<mpi::Runtime> runtime, mpi::Runtime::acquire());
  auto comm = std::make_unique<MpiCommunicator>(std::move(runtime));
  TANDEM_RETURN_IF_ERROR(comm->init());
  return comm;
}

}  // namespace tandem::transport
