#include "transport/nccl/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>
#include <sched.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "transport/nccl/nccl_handles.h"

namespace tandem::transport {

absl::Status nccl::cuda_error(const std::string& what, cudaError_t e) {
  return absl::UnavailableError(absl::StrCat(what, " failed: ", cudaGetErrorString(e)));
}

absl::Status nccl::nccl_error(const std::string& what, ncclResult_t r) {
  std::string text = absl::StrCat(what, " failed: ", ncclGetErrorString(r));
  if (r == ncclInvalidArgument || r == ncclInvalidUsage) return absl::InternalError(text);
  return absl::UnavailableError(text);
}

namespace {

ncclDataType_t nccl_type(DataType type) {
  switch (type) {
    case DataType::kF32:
      return ncclFloat32;
    case DataType::kF16:
      return ncclFloat16;
    case DataType::kBF16:
      return ncclBfloat16;
    case DataType::kI32:
      return ncclInt32;
    case DataType::kU8:
      return ncclUint8;
  }
  return ncclUint8;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(int rank, int size, int device) : rank_(rank), size_(size), device_(device) {}
  ~NcclCommunicator() override;

  absl::Status init(Bootstrap& bootstrap, const NcclOptions& options);

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string_view backend() const override { return "nccl"; }
  absl::StatusOr<std::unique_ptr<Request>> isend(const void* data, size_t bytes, int peer,
                                                 uint32_t tag) override;
  absl::StatusOr<std::unique_ptr<Request>> irecv(void* data, size_t bytes, int peer,
                                                 uint32_t tag) override;
  absl::Status all_reduce(void* data, size_t count, DataType type, ReduceOp op,
                          Deadline deadline) override;
  absl::Status all_gather(const void* send, void* recv, size_t count, DataType type,
                          Deadline deadline) override;
  absl::Status broadcast(void* data, size_t bytes, int root, Deadline deadline) override;
  absl::Status barrier(Deadline deadline) override;
  absl::StatusOr<std::unique_ptr<Communicator>> split(std::span<const int> ranks,
                                                      uint32_t group_id) override;
  void abort(const absl::Status& reason) override;

  // Polls `event` until it fires; on the deadline or an NCCL error the
  // communicator is aborted (the GPU work cannot be taken back otherwise).
  absl::Status wait_event(cudaEvent_t event, Deadline deadline, const std::string& what);
  bool event_done(cudaEvent_t event);

 private:
  template <typename Enqueue>
  absl::StatusOr<nccl::Event> enqueue(const std::string& what, Deadline deadline, Enqueue&& op);
  // With mu_ held: waits out ncclInProgress of a non-blocking call.
  absl::Status settle_locked(ncclResult_t r, const std::string& what, Deadline deadline);
  void abort_locked(const absl::Status& reason);
  absl::Status check_peer(int peer) const;

  const int rank_, size_, device_;
  std::mutex mu_;  // the NCCL communicator and the stream, one caller at a time
  nccl::Stream stream_;
  nccl::DeviceBuffer barrier_word_;  // one int for barrier()
  nccl::Comm comm_;                  // destroyed first
  std::atomic<bool> aborted_{false};
  absl::Status abort_status_;
};

class NcclRequest final : public Request {
 public:
  NcclRequest(NcclCommunicator* comm, nccl::Event event, std::string what)
      : comm_(comm), event_(std::move(event)), what_(std::move(what)) {}
  // The GPU op cannot be cancelled: a pending one aborts the communicator so
  // the buffer is not touched afterwards.
  ~NcclRequest() override {
    if (!done_ && !comm_->event_done(event_.get())) {
      comm_->abort(absl::CancelledError(absl::StrCat(what_, ": request dropped while pending")));
    }
  }
  absl::Status wait(Deadline deadline) override {
    absl::Status s = comm_->wait_event(event_.get(), deadline, what_);
    if (s.ok()) done_ = true;
    return s;
  }
  bool test() override { return done_ = done_ || comm_->event_done(event_.get()); }

 private:
  NcclCommunicator* comm_;
  nccl::Event event_;
  std::string what_;
  bool done_ = false;
};

absl::Status NcclCommunicator::check_peer(int peer) const {
  if (peer < 0 || peer >= size_) {
    return absl::InvalidArgumentError(absl::StrCat("peer ", peer, " is not in [0, ", size_, ")"));
  }
  return absl::OkStatus();
}

void NcclCommunicator::abort_locked(const absl::Status& reason) {
  if (aborted_) return;
  abort_status_ = absl::AbortedError(absl::StrCat("communicator aborted: ", reason.ToString()));
  aborted_ = true;
  // Stops the kernels of this communicator; the handle is gone after it.
  if (comm_.get() != nullptr) ncclCommAbort(comm_.release());
}

void NcclCommunicator::abort(const absl::Status& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  abort_locked(reason);
}

absl::Status NcclCommunicator::settle_locked(ncclResult_t r, const std::string& what,
                                             Deadline deadline) {
  while (r == ncclInProgress) {
    if (Clock::now() >= deadline) {
      absl::Status s = absl::DeadlineExceededError(absl::StrCat(what, " timed out"));
      abort_locked(s);
      return s;
    }
    sched_yield();
    if (ncclCommGetAsyncError(comm_.get(), &r) != ncclSuccess) r = ncclInternalError;
  }
  if (r != ncclSuccess) {
    absl::Status s = nccl::nccl_error(what, r);
    abort_locked(s);
    return s;
  }
  return absl::OkStatus();
}

template <typename Enqueue>
absl::StatusOr<nccl::Event> NcclCommunicator::enqueue(const std::string& what, Deadline deadline,
                                                      Enqueue&& op) {
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_) return abort_status_;
  cudaError_t e = cudaSetDevice(device_);  // the caller's thread may be new
  if (e != cudaSuccess) return nccl::cuda_error("cudaSetDevice", e);
  TANDEM_RETURN_IF_ERROR(settle_locked(op(comm_.get(), stream_.get()), what, deadline));
  cudaEvent_t raw = nullptr;
  e = cudaEventCreateWithFlags(&raw, cudaEventDisableTiming);
  if (e != cudaSuccess) return nccl::cuda_error("cudaEventCreate", e);
  nccl::Event event(raw);
  e = cudaEventRecord(event.get(), stream_.get());
  if (e != cudaSuccess) return nccl::cuda_error("cudaEventRecord", e);
  return event;
}

bool NcclCommunicator::event_done(cudaEvent_t event) {
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_) return true;
  return cudaEventQuery(event) != cudaErrorNotReady;
}

absl::Status NcclCommunicator::wait_event(cudaEvent_t event, Deadline deadline,
                                          const std::string& what) {
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (aborted_) return abort_status_;
      cudaError_t e = cudaEventQuery(event);
      if (e == cudaSuccess) return absl::OkStatus();
      if (e != cudaErrorNotReady) {
        absl::Status s = nccl::cuda_error(what, e);
        abort_locked(s);
        return s;
      }
      // A peer's failure shows up here (network errors, a remote abort).
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_.get(), &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        absl::Status s = nccl::nccl_error(what, async);
        abort_locked(s);
        return s;
      }
      if (Clock::now() >= deadline) {
        absl::Status s = absl::DeadlineExceededError(absl::StrCat(what, " timed out"));
        abort_locked(s);
        return s;
      }
    }
    sched_yield();
  }
}

absl::StatusOr<std::unique_ptr<Request>> NcclCommunicator::isend(const void* data, size_t bytes,
                                                                 int peer, uint32_t) {
  TANDEM_RETURN_IF_ERROR(check_peer(peer));
  std::string what = absl::StrCat("ncclSend to rank ", peer);
  TANDEM_ASSIGN_OR_RETURN(
      nccl::Event event,
      enqueue(what, deadline_in(std::chrono::seconds(10)), [&](ncclComm_t c, cudaStream_t s) {
        return ncclSend(data, bytes, ncclUint8, peer, c, s);
      }));
  return std::make_unique<NcclRequest>(this, std::move(event), std::move(what));
}

absl::StatusOr<std::unique_ptr<Request>> NcclCommunicator::irecv(void* data, size_t bytes, int peer,
                                                                 uint32_t) {
  TANDEM_RETURN_IF_ERROR(check_peer(peer));
  std::string what = absl::StrCat("ncclRecv from rank ", peer);
  TANDEM_ASSIGN_OR_RETURN(
      nccl::Event event,
      enqueue(what, deadline_in(std::chrono::seconds(10)), [&](ncclComm_t c, cudaStream_t s) {
        return ncclRecv(data, bytes, ncclUint8, peer, c, s);
      }));
  return std::make_unique<NcclRequest>(this, std::move(event), std::move(what));
}

absl::Status NcclCommunicator::all_reduce(void* data, size_t count, DataType type, ReduceOp,
                                          Deadline deadline) {
  TANDEM_ASSIGN_OR_RETURN(nccl::Event event,
                          enqueue("ncclAllReduce", deadline, [&](ncclComm_t c, cudaStream_t s) {
                            return ncclAllReduce(data, data, count, nccl_type(type), ncclSum, c, s);
                          }));
  return wait_event(event.get(), deadline, "ncclAllReduce");
}

absl::Status NcclCommunicator::all_gather(const void* send, void* recv, size_t count, DataType type,
                                          Deadline deadline) {
  TANDEM_ASSIGN_OR_RETURN(nccl::Event event,
                          enqueue("ncclAllGather", deadline, [&](ncclComm_t c, cudaStream_t s) {
                            return ncclAllGather(send, recv, count, nccl_type(type), c, s);
                          }));
  return wait_event(event.get(), deadline, "ncclAllGather");
}

absl::Status NcclCommunicator::broadcast(void* data, size_t bytes, int root, Deadline deadline) {
  TANDEM_RETURN_IF_ERROR(check_peer(root));
  TANDEM_ASSIGN_OR_RETURN(nccl::Event event,
                          enqueue("ncclBroadcast", deadline, [&](ncclComm_t c, cudaStream_t s) {
                            return ncclBroadcast(data, data, bytes, ncclUint8, root, c, s);
                          }));
  return wait_event(event.get(), deadline, "ncclBroadcast");
}

absl::Status NcclCommunicator::barrier(Deadline deadline) {
  return all_reduce(barrier_word_.get(), 1, DataType::kI32, ReduceOp::kSum, deadline);
}

absl::StatusOr<std::unique_ptr<Communicator>> NcclCommunicator::split(std::span<const int>,
                                                                      uint32_t) {
  return absl::UnimplementedError(
      "split() of an NCCL communicator: ncclCommSplit needs every rank of the parent; make a "
      "communicator per group from its own bootstrap instead");
}

NcclCommunicator::~NcclCommunicator() {
  std::lock_guard<std::mutex> lock(mu_);
  if (comm_.get() == nullptr) return;
  cudaSetDevice(device_);
  // Destroying waits for the stream's work: give it a bounded while, then
  // abort whatever still runs.
  auto until = Clock::now() + std::chrono::seconds(2);
  while (stream_.get() != nullptr && cudaStreamQuery(stream_.get()) == cudaErrorNotReady &&
         Clock::now() < until) {
    sched_yield();
  }
  if (stream_.get() != nullptr && cudaStreamQuery(stream_.get()) == cudaErrorNotReady) {
    ncclCommAbort(comm_.release());
  }
}

absl::Status NcclCommunicator::init(Bootstrap& bootstrap, const NcclOptions& options) {
  auto deadline = Clock::now() + options.setup_timeout;
  cudaError_t e = cudaSetDevice(device_);
  if (e != cudaSuccess) return nccl::cuda_error(absl::StrCat("cudaSetDevice(", device_, ")"), e);
  cudaStream_t stream = nullptr;
  e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) return nccl::cuda_error("cudaStreamCreate", e);
  stream_ = nccl::Stream(stream);
  void* word = nullptr;
  e = cudaMalloc(&word, sizeof(int32_t));
  if (e != cudaSuccess) return nccl::cuda_error("cudaMalloc", e);
  barrier_word_ = nccl::DeviceBuffer(word);

  // Every communicator made over one bootstrap gets its own key (counted per
  // bootstrap, as the UCX backend's are).
  std::string key = absl::StrCat("tandem/nccl/", bootstrap.next_sequence(), "/id");
  ncclUniqueId id{};
  if (rank_ == 0) {
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) return nccl::nccl_error("ncclGetUniqueId", r);
    TANDEM_RETURN_IF_ERROR(bootstrap.set(
        key, std::string_view(reinterpret_cast<const char*>(&id), sizeof(id)), deadline));
  } else {
    TANDEM_ASSIGN_OR_RETURN(std::string bytes, bootstrap.get(key, deadline));
    if (bytes.size() != sizeof(id)) {
      return absl::InvalidArgumentError(absl::StrCat("the NCCL id from the store has ",
                                                     bytes.size(), " bytes, want ", sizeof(id)));
    }
    std::memcpy(&id, bytes.data(), sizeof(id));
  }

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // so that set-up and every call can be bounded
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, size_, id, rank_, &config);
  if (comm != nullptr) comm_ = nccl::Comm(comm);
  if (r != ncclSuccess && r != ncclInProgress) {
    return nccl::nccl_error("ncclCommInitRankConfig", r);
  }
  std::lock_guard<std::mutex> lock(mu_);
  return settle_locked(r, "ncclCommInitRankConfig", deadline);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> make_nccl_communicator(Bootstrap& bootstrap,
                                                                     int device,
                                                                     NcclOptions options) {
  auto comm = std::make_unique<NcclCommunicator>(bootstrap.rank(), bootstrap.world_size(), device);
  TANDEM_RETURN_IF_ERROR(comm->init(bootstrap, options));
  return comm;
}

}  // namespace tandem::transport
