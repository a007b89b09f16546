#include "transport/ucx/ucx_communicator.h"

#include <sched.h>
#include <ucp/api/ucp.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "transport/request_pool.h"
#include "transport/ucx/peer_memory.h"
#include "transport/ucx/ucx_handles.h"
#include "transport/ucx/ucx_transports.h"

namespace tandem::transport {
namespace {

// Tags above every user and collective tag: the start-up handshake.
constexpr uint32_t kWireupTag = 0xFFFFFFFFu;
// How long a dying Request or communicator keeps progressing to get its
// cancelled UCX requests back before it leaves them to UCX.
constexpr auto kCancelGrace = std::chrono::seconds(2);
// The start-up warm-up of eager receive buffers: more messages than the
// shared memory transports' receive ring holds (UCX_*_FIFO_SIZE, 64), each
// just under the 8 KiB rendezvous threshold that UCX picks on loopback.
constexpr int kWarmupMessages = 160;
constexpr size_t kWarmupBytes = 8000;
// How long a wait busy-polls without progress before it yields the CPU.
constexpr auto kSpinBeforeYield = std::chrono::microseconds(50);
// Ops (and request handles) made ready at start-up: more than a decode step
// or a pipelined collective keeps in flight, so they never reach the heap.
constexpr size_t kPooledOps = 64;
// UCX tags with this bit belong to the backend itself (the direct
// all_reduce's messages); no user or collective tag reaches it. Bits 48..55
// then hold the sub-communicator (0 for the root, group_id + 1 for a split),
// bits 32..47 the source rank, bits 0..31 the protocol's tag.
constexpr uint64_t kPrivateTagBit = uint64_t{1} << 62;

uint64_t make_tag(int source, uint32_t tag) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(source)) << 32) | tag;
}
uint64_t private_tag(int source, uint32_t group, uint64_t tag) {
  return make_tag(source, static_cast<uint32_t>(tag)) | kPrivateTagBit | (uint64_t{group} << 48);
}

void log_line(const std::string& line) { std::fprintf(stderr, "tandem/ucx: %s\n", line.c_str()); }

class UcxCommunicator;

// One send or receive. Owned by its UcxRequest until that dies while UCX
// still holds the operation: then it is `orphaned` and the completion
// callback recycles it. OpStates are recycled through the communicator's free
// list, so a send or receive allocates nothing once the list is warm (two
// per layer per token on the decode path).
struct OpState {
  UcxCommunicator* comm = nullptr;
  int peer = 0;
  bool is_recv = false;
  size_t bytes = 0;
  void* ucx_req = nullptr;  // non-null while UCX owns the operation
  bool done = false;        // completion as the user sees it
  absl::Status status;
  bool orphaned = false;
  ucp_tag_recv_info_t info{};
  OpState* prev = nullptr;  // links of the communicator's list of live ops
  OpState* next = nullptr;
};

// The ops UCX still holds: an intrusive list, so tracking one allocates nothing.
class LiveOps {
 public:
  void insert(OpState* op) {
    op->prev = nullptr;
    op->next = head_;
    if (head_ != nullptr) head_->prev = op;
    head_ = op;
  }
  void erase(OpState* op) {
    (op->prev != nullptr ? op->prev->next : head_) = op->next;
    if (op->next != nullptr) op->next->prev = op->prev;
    op->prev = op->next = nullptr;
  }
  bool empty() const { return head_ == nullptr; }
  // A copy, for loops that may erase while they walk (rare paths only).
  std::vector<OpState*> snapshot() const {
    std::vector<OpState*> ops;
    for (OpState* op = head_; op != nullptr; op = op->next) ops.push_back(op);
    return ops;
  }

 private:
  OpState* head_ = nullptr;
};

struct PeerSlot {
  UcxCommunicator* comm;
  int rank;
};

class UcxCommunicator final : public Communicator {
 public:
  UcxCommunicator(int rank, int size)
      : rank_(rank), size_(size), peer_status_(size), stalled_(size, false) {}
  ~UcxCommunicator() override;

  absl::Status init(Bootstrap& bootstrap, const UcxOptions& options);

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string_view backend() const override { return "ucx"; }
  std::string link_path(int peer) const override {
    return peer >= 0 && peer < static_cast<int>(paths_.size()) ? paths_[peer] : "";
  }
  absl::StatusOr<std::unique_ptr<Request>> isend(const void* data, size_t bytes, int peer,
                                                 uint32_t tag) override;
  absl::StatusOr<std::unique_ptr<Request>> irecv(void* data, size_t bytes, int peer,
                                                 uint32_t tag) override;
  absl::Status all_reduce(void* data, size_t count, DataType type, ReduceOp op,
                          Deadline deadline) override;
  absl::StatusOr<std::unique_ptr<Communicator>> split(std::span<const int> ranks,
                                                      uint32_t group_id) override;
  void abort(const absl::Status& reason) override;

  // isend/irecv with the whole 64-bit UCX tag.
  absl::StatusOr<std::unique_ptr<Request>> post_send(const void* data, size_t bytes, int peer,
                                                     uint64_t ucx_tag);
  absl::StatusOr<std::unique_ptr<Request>> post_recv(void* data, size_t bytes, int peer,
                                                     uint64_t ucx_tag);
  // The abort status once abort() was called; OK before.
  absl::Status stopped();

  absl::Status wait(OpState& op, Deadline deadline);
  bool test(OpState& op);
  void release(OpState* op);

  static void send_cb(void* request, ucs_status_t status, void* user_data) {
    auto* op = static_cast<OpState*>(user_data);
    op->comm->on_complete(op, request, status);
  }
  static void recv_cb(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info,
                      void* user_data) {
    auto* op = static_cast<OpState*>(user_data);
    if (info != nullptr) op->info = *info;
    op->comm->on_complete(op, request, status);
  }
  static void peer_error_cb(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* slot = static_cast<PeerSlot*>(arg);
    slot->comm->on_peer_error(slot->rank, status);
  }

 private:
  absl::StatusOr<std::unique_ptr<Request>> start(OpState* op, ucs_status_ptr_t r);
  // Whether the direct all_reduce may run with `peer`: UCX_TLS lets UCX use
  // cma (see init()).
  bool direct_allowed(int peer) const;
  absl::Status final_status(OpState& op, ucs_status_t status);
  void on_complete(OpState* op, void* request, ucs_status_t status);
  void on_peer_error(int peer, ucs_status_t status);
  // With mu_ held: settles `op` if its peer failed or the communicator was
  // aborted; returns whether it is done.
  bool settle_locked(OpState& op);
  void cancel_locked(OpState& op);
  absl::Status check_peer(int peer) const;
  // With mu_ held: a fresh op from the free list (or the heap when it is empty).
  OpState* new_op_locked(int peer, bool is_recv, size_t bytes);
  void recycle_locked(OpState* op);

  const int rank_, size_;
  std::mutex mu_;  // the worker is used by one thread at a time
  ucx::Context context_;
  ucx::Worker worker_;  // destroyed before context_
  std::vector<ucp_ep_h> eps_;
  std::vector<std::string> paths_;  // what UCX picked for each endpoint, read once wired up
  std::vector<std::unique_ptr<PeerSlot>> slots_;
  std::vector<absl::Status> peer_status_;  // UNAVAILABLE once a peer failed
  LiveOps live_;                           // ops UCX still holds
  std::vector<OpState*> free_ops_;         // recycled ops, owned here
  // A peer one of whose cancelled ops outlived kCancelGrace (a dead link that
  // no error reports): later releases to it get the short grace, and the
  // endpoint is force-closed, so a failed collective with many chunks in
  // flight does not wait kCancelGrace per chunk, and the worker is not
  // destroyed over requests UCX still holds (UCX asserts on that).
  std::vector<bool> stalled_;
  std::atomic<bool> aborted_{false};
  absl::Status abort_status_;
  bool closing_ = false;
  bool direct_option_ = false;    // UcxOptions::direct_peer_memory
  bool cma_in_context_ = false;  // UCX_TLS lets UCX use cma
  bool log_transports_ = false;
  // Set when this 2-rank world's large all_reduces go through the peer's
  // memory, with the channel of its messages.
  std::unique_ptr<ucx::DirectAllReduce> direct_;
  std::unique_ptr<ucx::DirectChannel> direct_channel_;
};

// The direct all_reduce's messages with one peer, under private tags of one
// sub-communicator.
class UcxDirectChannel final : public ucx::DirectChannel {
 public:
  UcxDirectChannel(UcxCommunicator& comm, int peer, uint32_t group)
      : comm_(comm), peer_(peer), group_(group) {}
  absl::StatusOr<std::unique_ptr<Request>> post_send(const void* data, size_t bytes,
                                                     uint64_t tag) override {
    return comm_.post_send(data, bytes, peer_, private_tag(comm_.rank(), group_, tag));
  }
  absl::StatusOr<std::unique_ptr<Request>> post_recv(void* data, size_t bytes,
                                                     uint64_t tag) override {
    return comm_.post_recv(data, bytes, peer_, private_tag(peer_, group_, tag));
  }
  absl::Status stopped() override { return comm_.stopped(); }

 private:
  UcxCommunicator& comm_;
  const int peer_;
  const uint32_t group_;
};

class UcxRequest final : public Request,
                         public PooledRequestMemory<UcxRequest, kPooledOps> {
 public:
  UcxRequest(UcxCommunicator* comm, OpState* op) : comm_(comm), op_(op) {}
  ~UcxRequest() override { comm_->release(op_); }
  absl::Status wait(Deadline deadline) override { return comm_->wait(*op_, deadline); }
  bool test() override { return comm_->test(*op_); }

 private:
  UcxCommunicator* comm_;
  OpState* op_;
};

absl::Status UcxCommunicator::check_peer(int peer) const {
  if (peer < 0 || peer >= size_) {
    return absl::InvalidArgumentError(absl::StrCat("peer ", peer, " is not in [0, ", size_, ")"));
  }
  return absl::OkStatus();
}

absl::Status UcxCommunicator::final_status(OpState& op, ucs_status_t status) {
  if (status == UCS_OK) {
    if (op.is_recv && op.info.length != op.bytes) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", rank_, " expected ", op.bytes,
                                                     " bytes from rank ", op.peer, ", got ",
                                                     op.info.length));
    }
    return absl::OkStatus();
  }
  if (status == UCS_ERR_MESSAGE_TRUNCATED) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank_, " expected ", op.bytes,
                                                   " bytes from rank ", op.peer,
                                                   ", the message was longer"));
  }
  if (status == UCS_ERR_CANCELED) {
    if (aborted_) return abort_status_;
    if (!peer_status_[op.peer].ok()) return peer_status_[op.peer];
    return absl::CancelledError("cancelled");
  }
  return absl::UnavailableError(absl::StrCat(op.is_recv ? "receive from" : "send to", " rank ",
                                             op.peer, " failed: ", ucs_status_string(status)));
}

OpState* UcxCommunicator::new_op_locked(int peer, bool is_recv, size_t bytes) {
  OpState* op;
  if (free_ops_.empty()) {
    op = new OpState;
  } else {
    op = free_ops_.back();
    free_ops_.pop_back();
  }
  *op = OpState{.comm = this, .peer = peer, .is_recv = is_recv, .bytes = bytes};
  return op;
}

void UcxCommunicator::recycle_locked(OpState* op) {
  op->status = absl::OkStatus();  // drops an error's payload now, not at reuse
  free_ops_.push_back(op);
}

void UcxCommunicator::on_complete(OpState* op, void* request, ucs_status_t status) {
  ucp_request_free(request);
  op->ucx_req = nullptr;
  live_.erase(op);
  if (op->orphaned) {
    recycle_locked(op);
    return;
  }
  if (!op->done) {
    op->done = true;
    op->status = final_status(*op, status);
  }
}

void UcxCommunicator::on_peer_error(int peer, ucs_status_t status) {
  if (!peer_status_[peer].ok()) return;
  peer_status_[peer] = absl::UnavailableError(absl::StrCat(
      "rank ", peer, " failed (seen by rank ", rank_, "): ", ucs_status_string(status)));
  if (!closing_) log_line(std::string(peer_status_[peer].message()));
}

absl::StatusOr<std::unique_ptr<Request>> UcxCommunicator::start(OpState* op, ucs_status_ptr_t r) {
  if (op->done) {
    // A receive completed inside ucp_tag_recv_nbx (NO_IMM_CMPL runs the
    // callback there, which already released the request).
  } else if (r == nullptr) {
    op->done = true;
    op->status = final_status(*op, UCS_OK);
  } else if (UCS_PTR_IS_ERR(r)) {
    op->done = true;
    op->status = final_status(*op, UCS_PTR_STATUS(r));
  } else {
    op->ucx_req = r;
    live_.insert(op);
  }
  return std::make_unique<UcxRequest>(this, op);
}

absl::StatusOr<std::unique_ptr<Request>> UcxCommunicator::isend(const void* data, size_t bytes,
                                                                int peer, uint32_t tag) {
  return post_send(data, bytes, peer, make_tag(rank_, tag));
}

absl::StatusOr<std::unique_ptr<Request>> UcxCommunicator::irecv(void* data, size_t bytes, int peer,
                                                                uint32_t tag) {
  return post_recv(data, bytes, peer, make_tag(peer, tag));
}

absl::StatusOr<std::unique_ptr<Request>> UcxCommunicator::post_send(const void* data, size_t bytes,
                                                                    int peer, uint64_t ucx_tag) {
  TANDEM_RETURN_IF_ERROR(check_peer(peer));
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_) return abort_status_;
  if (!peer_status_[peer].ok()) return peer_status_[peer];
  OpState* op = new_op_locked(peer, /*is_recv=*/false, bytes);
  ucp_request_param_t p{};
  p.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE;
  p.cb.send = &UcxCommunicator::send_cb;
  p.user_data = op;
  p.datatype = ucp_dt_make_contig(1);
  return start(op, ucp_tag_send_nbx(eps_[peer], data, bytes, ucx_tag, &p));
}

absl::StatusOr<std::unique_ptr<Request>> UcxCommunicator::post_recv(void* data, size_t bytes,
                                                                    int peer, uint64_t ucx_tag) {
  TANDEM_RETURN_IF_ERROR(check_peer(peer));
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_) return abort_status_;
  if (!peer_status_[peer].ok()) return peer_status_[peer];
  OpState* op = new_op_locked(peer, /*is_recv=*/true, bytes);
  ucp_request_param_t p{};
  // UCX 1.13 can complete a receive immediately without filling recv_info
  // (seen on loopback: length 0 for a 1-byte message), so the length always
  // comes through the callback.
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                   UCP_OP_ATTR_FIELD_DATATYPE | UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
  p.cb.recv = &UcxCommunicator::recv_cb;
  p.user_data = op;
  p.datatype = ucp_dt_make_contig(1);
  return start(op, ucp_tag_recv_nbx(worker_.get(), data, bytes, ucx_tag, ~uint64_t{0}, &p));
}

absl::Status UcxCommunicator::stopped() {
  if (!aborted_) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(mu_);
  return abort_status_;
}

bool UcxCommunicator::direct_allowed(int peer) const {
  return direct_option_ && (cma_in_context_ || paths_[peer].find("cma/") != std::string::npos);
}

absl::Status UcxCommunicator::all_reduce(void* data, size_t count, DataType type, ReduceOp op,
                                         Deadline deadline) {
  if (direct_ == nullptr || !ucx::DirectAllReduce::eligible(data, count, type, op)) {
    return Communicator::all_reduce(data, count, type, op, deadline);
  }
  return direct_->run(rank_, data, count, type, deadline, *direct_channel_);
}

absl::StatusOr<std::unique_ptr<Communicator>> UcxCommunicator::split(std::span<const int> ranks,
                                                                     uint32_t group_id) {
  TANDEM_ASSIGN_OR_RETURN(auto inner, Communicator::split(ranks, group_id));
  // A TP group of 2 (the engine splits even when the group is the whole
  // world): its large all_reduces may go through the peer's memory too. The
  // default split checked ranks and group_id (below kMaxGroupId, 127).
  if (ranks.size() != 2 || !direct_option_) return inner;
  const int peer = ranks[0] == rank_ ? ranks[1] : ranks[0];
  return ucx::make_direct_split(std::move(inner),
                                std::make_unique<UcxDirectChannel>(*this, peer, group_id + 1),
                                direct_allowed(peer),
                                log_transports_
                                    ? absl::StrCat("rank ", rank_, ", group ", group_id)
                                    : std::string());
}

void UcxCommunicator::cancel_locked(OpState& op) {
  if (op.ucx_req != nullptr) ucp_request_cancel(worker_.get(), op.ucx_req);
}

bool UcxCommunicator::settle_locked(OpState& op) {
  if (op.done) return true;
  absl::Status fail = aborted_ ? abort_status_ : peer_status_[op.peer];
  if (fail.ok()) return false;
  // UCX completes sends on a failed endpoint itself, but a tagged receive
  // is not bound to an endpoint: fail it here, and cancel what UCX holds
  // (the cancel may complete it, and free it if orphaned: touch it no more).
  op.done = true;
  op.status = fail;
  cancel_locked(op);
  return true;
}

absl::Status UcxCommunicator::wait(OpState& op, Deadline deadline) {
  Clock::time_point idle_since = Clock::now();
  for (;;) {
    bool progressed;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (settle_locked(op)) return op.status;
      progressed = ucp_worker_progress(worker_.get()) != 0;
      if (settle_locked(op)) return op.status;
    }
    const Clock::time_point now = Clock::now();
    if (now >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(op.is_recv ? "receive from" : "send to", " rank ", op.peer, " timed out"));
    }
    // Busy progress is the fast path; on a crowded machine, step aside, but
    // only after kSpinBeforeYield without progress: a yield to another
    // runnable task costs a time slice, more than a small exchange takes.
    if (progressed) {
      idle_since = now;
    } else if (now - idle_since > kSpinBeforeYield) {
      sched_yield();
    }
  }
}

bool UcxCommunicator::test(OpState& op) {
  std::lock_guard<std::mutex> lock(mu_);
  if (settle_locked(op)) return true;
  ucp_worker_progress(worker_.get());
  return settle_locked(op);
}

void UcxCommunicator::release(OpState* op) {
  std::lock_guard<std::mutex> lock(mu_);
  if (op->ucx_req == nullptr) {
    recycle_locked(op);
    return;
  }
  // Still in flight: cancel, and progress until UCX hands it back. An op
  // already failed by abort() or a peer's death gets only a short grace.
  auto until = Clock::now() +
               (op->done || stalled_[op->peer] ? std::chrono::milliseconds(50) : kCancelGrace);
  op->done = true;
  cancel_locked(*op);
  while (op->ucx_req != nullptr && Clock::now() < until) ucp_worker_progress(worker_.get());
  if (op->ucx_req == nullptr) {
    recycle_locked(op);
  } else {
    op->orphaned = true;  // the callback frees it; the buffer is UCX's problem now
    stalled_[op->peer] = true;
  }
}

void UcxCommunicator::abort(const absl::Status& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_) return;
  abort_status_ = absl::AbortedError(absl::StrCat("communicator aborted: ", reason.ToString()));
  aborted_ = true;
  // Every waiter sees the flag at its next iteration; cancel what UCX holds.
  for (OpState* op : live_.snapshot()) {
    if (!op->orphaned) settle_locked(*op);
  }
}

UcxCommunicator::~UcxCommunicator() {
  std::lock_guard<std::mutex> lock(mu_);
  closing_ = true;
  if (worker_.get() == nullptr) return;
  for (OpState* op : live_.snapshot()) {
    op->orphaned = true;
    cancel_locked(*op);
    if (op->ucx_req != nullptr && !op->is_recv) stalled_[op->peer] = true;
  }
  // Close endpoints: flush to live peers (bounded), force to failed ones.
  std::vector<void*> closing;
  for (int p = 0; p < static_cast<int>(eps_.size()); ++p) {
    if (eps_[p] == nullptr) continue;
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = peer_status_[p].ok() && !stalled_[p] ? 0 : UCP_EP_CLOSE_FLAG_FORCE;
    ucs_status_ptr_t r = ucp_ep_close_nbx(eps_[p], &param);
    if (r != nullptr && !UCS_PTR_IS_ERR(r)) closing.push_back(r);
  }
  auto until = Clock::now() + kCancelGrace;
  while (Clock::now() < until) {
    ucp_worker_progress(worker_.get());
    bool all = true;
    for (void* r : closing) all = all && ucp_request_check_status(r) != UCS_INPROGRESS;
    if (all && live_.empty()) break;
  }
  for (void* r : closing) ucp_request_free(r);
  // Ops UCX still holds after the grace stay with it (their callbacks may yet
  // run); the recycled ones are ours.
  for (OpState* op : free_ops_) delete op;
}

absl::Status UcxCommunicator::init(Bootstrap& bootstrap, const UcxOptions& options) {
  auto deadline = BootstrapClock::now() + options.setup_timeout;
  ucp_config_t* raw_config = nullptr;
  ucs_status_t st = ucp_config_read(nullptr, nullptr, &raw_config);  // honours UCX_*
  if (st != UCS_OK) return ucx::ucs_error("ucp_config_read", st);
  ucx::Config config(raw_config);
  if (options.peer_failure_detection && std::getenv("UCX_KEEPALIVE_INTERVAL") == nullptr) {
    std::string interval = absl::StrCat(options.keepalive_interval.count(), "ms");
    ucp_config_modify(config.get(), "KEEPALIVE_INTERVAL", interval.c_str());
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_TAG;
  ucp_context_h context = nullptr;
  st = ucp_init(&params, config.get(), &context);
  if (st != UCS_OK) return ucx::ucs_error("ucp_init", st);
  context_ = ucx::Context(context);

  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SERIALIZED;
  ucp_worker_h worker = nullptr;
  st = ucp_worker_create(context_.get(), &wp, &worker);
  if (st != UCS_OK) return ucx::ucs_error("ucp_worker_create", st);
  worker_ = ucx::Worker(worker);

  ucp_address_t* address = nullptr;
  size_t address_len = 0;
  st = ucp_worker_get_address(worker_.get(), &address, &address_len);
  if (st != UCS_OK) return ucx::ucs_error("ucp_worker_get_address", st);
  ucx::WorkerAddress own(worker_.get(), address, address_len);

  // Every communicator made over one bootstrap gets its own keys (counted per
  // bootstrap: a process that joins a second cluster starts again at 0, as
  // the fresh ranks of that cluster do).
  std::string name = absl::StrCat("tandem/ucx/", bootstrap.next_sequence(), "/address");
  TANDEM_ASSIGN_OR_RETURN(std::vector<std::string> addresses,
                          bootstrap.all_gather(name, own.bytes(), deadline));

  free_ops_.reserve(4 * kPooledOps);
  for (size_t i = 0; i < kPooledOps; ++i) free_ops_.push_back(new OpState);
  eps_.assign(size_, nullptr);
  for (int p = 0; p < size_; ++p) {
    slots_.push_back(std::make_unique<PeerSlot>(PeerSlot{this, p}));
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    ep.address = reinterpret_cast<const ucp_address_t*>(addresses[p].data());
    ep.err_mode =
        options.peer_failure_detection ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
    if (options.peer_failure_detection) {
      ep.field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLER;
      ep.err_handler.cb = &UcxCommunicator::peer_error_cb;
      ep.err_handler.arg = slots_.back().get();
    }
    st = ucp_ep_create(worker_.get(), &ep, &eps_[p]);
    if (st == UCS_ERR_UNREACHABLE && options.peer_failure_detection) {
      // UCX 1.13 runs no peer error handling over shared memory.
      return absl::UnavailableError(absl::StrCat(
          "ucp_ep_create to rank ", p,
          ": destination unreachable with peer failure detection "
          "on; shared memory cannot carry it in UCX 1.13: add tcp to UCX_TLS (now '",
          std::getenv("UCX_TLS") ? std::getenv("UCX_TLS") : "", "') or turn detection off"));
    }
    if (st != UCS_OK) return ucx::ucs_error(absl::StrCat("ucp_ep_create to rank ", p), st);
  }

  // Wire up every pair now (a message each way) so the first real operation
  // does not pay for it and a dead link shows up here.
  std::vector<std::unique_ptr<Request>> requests;
  std::vector<uint8_t> sink(size_);
  uint8_t one = 1;
  for (int p = 0; p < size_; ++p) {
    TANDEM_ASSIGN_OR_RETURN(auto r, irecv(&sink[p], 1, p, kWireupTag));
    requests.push_back(std::move(r));
    TANDEM_ASSIGN_OR_RETURN(auto s, isend(&one, 1, p, kWireupTag));
    requests.push_back(std::move(s));
  }
  for (auto& r : requests) TANDEM_RETURN_IF_ERROR(r->wait(deadline));
  requests.clear();

  // Then a ring's worth of eager-sized messages each way: UCX's shared
  // memory transports pass each eager message through one of a ring of
  // receive descriptors (64 by default) in fresh shared pages, and the page
  // faults of the first pass cost each small operation 3-10 us for its first
  // calls at every new size (seen in bench sweeps as slow medians at 128 B to
  // 8 KiB). Over TCP this is a millisecond of traffic.
  std::vector<uint8_t> warm_out(kWarmupBytes), warm_in(kWarmupBytes);
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    for (int i = 0; i < kWarmupMessages; ++i) {
      // The receives share one buffer: their contents are never read.
      TANDEM_ASSIGN_OR_RETURN(auto r, irecv(warm_in.data(), kWarmupBytes, p, kWireupTag));
      requests.push_back(std::move(r));
      TANDEM_ASSIGN_OR_RETURN(auto s, isend(warm_out.data(), kWarmupBytes, p, kWireupTag));
      requests.push_back(std::move(s));
    }
  }
  for (auto& r : requests) TANDEM_RETURN_IF_ERROR(r->wait(deadline));
  requests.clear();
  TANDEM_RETURN_IF_ERROR(bootstrap.barrier(deadline));

  for (int p = 0; p < size_; ++p) paths_.push_back(ucx::endpoint_transports(eps_[p]));
  // Where UCX_TLS lets UCX use cma: UCX then carries a pair on one host over
  // shared memory, or it would but for peer failure detection (UCX 1.13 runs
  // none over shared memory, and takes TCP instead). The direct path detects
  // a dead peer itself (its pid is gone; its exit word says it failed), so it
  // keeps shared memory's bandwidth with detection on; its small messages
  // still go over what UCX picked. A peer on another host fails the attach.
  direct_option_ = options.direct_peer_memory;
  log_transports_ = options.log_transports;
  cma_in_context_ = ucx::context_has_resource(context_.get(), "cma/memory");
  if (size_ == 2) {
    const int peer = 1 - rank_;
    auto direct = std::make_unique<ucx::DirectAllReduce>();
    auto channel = std::make_unique<UcxDirectChannel>(*this, peer, 0);
    TANDEM_ASSIGN_OR_RETURN(const bool agreed,
                            direct->agree(direct_allowed(peer), deadline, *channel));
    if (agreed) {
      direct_ = std::move(direct);
      direct_channel_ = std::move(channel);
    } else if (!direct->refusal().empty() && options.log_transports) {
      log_line(absl::StrCat("rank ", rank_, ": no direct all_reduce with rank ", peer, ": ",
                            direct->refusal()));
    }
  }
  if (options.log_transports) {
    int peer = size_ > 1 ? (rank_ + 1) % size_ : rank_;
    log_line(absl::StrCat(
        "rank ", rank_, ": UCX_TLS=", std::getenv("UCX_TLS") ? std::getenv("UCX_TLS") : "(default)",
        ", peer failure detection ", options.peer_failure_detection ? "on" : "off", ", to rank ",
        peer, ": ", paths_[peer],
        direct_ != nullptr ? ", large all_reduce through peer memory (cma)" : ""));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ucx::ucs_error(const std::string& what, ucs_status_t status) {
  return absl::UnavailableError(absl::StrCat(what, " failed: ", ucs_status_string(status)));
}

absl::StatusOr<std::unique_ptr<Communicator>> make_ucx_communicator(Bootstrap& bootstrap,
                                                                    UcxOptions options) {
  auto comm = std::make_unique<UcxCommunicator>(bootstrap.rank(), bootstrap.world_size());
  TANDEM_RETURN_IF_ERROR(comm->init(bootstrap, options));
  return comm;
}

}  // namespace tandem::transport
