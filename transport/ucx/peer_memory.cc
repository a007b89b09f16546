#include "transport/ucx/peer_memory.h"

#include <sched.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstddef>
#include <cstring>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "transport/collectives/collective_state.h"
#include "transport/collectives/reduce.h"

namespace tandem::transport::ucx {
namespace {

// Read, summed and written back while it is still in this core's L2 (1 MiB
// on the machines measured): the peer's chunk lands in scratch_ and the own
// chunk is read, summed and written to the peer from cache.
constexpr size_t kChunkBytes = 256 << 10;
// How long a failed op waits for the peer to stop writing into the caller's
// buffer (the peer checks before every chunk, so this is microseconds unless
// the peer is stopped or stuck).
constexpr auto kPeerExitGrace = std::chrono::seconds(2);
// While it waits for the peer's "done" message, how often a rank reads the
// peer's exit word (a syscall) to see whether the peer failed instead.
constexpr auto kPeerLookInterval = std::chrono::microseconds(50);

absl::Status errno_status(const char* what, pid_t pid, int err) {
  const std::string text = absl::StrCat(what, " of pid ", pid, " failed: ", std::strerror(err));
  if (err == ESRCH) return absl::UnavailableError(absl::StrCat(text, " (the peer is gone)"));
  if (err == EPERM) return absl::PermissionDeniedError(text);
  return absl::UnavailableError(text);
}

}  // namespace

bool DirectAllReduce::eligible(const void* data, size_t count, DataType type, ReduceOp op) {
  if (op != ReduceOp::kSum || !reducible(type) || data == nullptr) return false;
  const size_t esize = dtype_size(type);
  return count <= SIZE_MAX / esize / 2 && count * esize >= kMinBytes;
}

DirectAllReduce::DirectAllReduce() : words_(std::make_unique<Words>()), scratch_(kChunkBytes) {
  std::random_device random;
  words_->nonce = (static_cast<uint64_t>(random()) << 32) ^ random() ^ 1;
}

PeerMemoryAddress DirectAllReduce::own_address() const {
  return PeerMemoryAddress{.pid = static_cast<uint64_t>(getpid()),
                           .words = reinterpret_cast<uint64_t>(words_.get()),
                           .nonce = words_->nonce};
}

absl::Status DirectAllReduce::read_peer_word(size_t offset, uint64_t* value) {
  iovec local{value, sizeof(*value)};
  iovec remote{reinterpret_cast<void*>(peer_words_ + offset), sizeof(*value)};
  const ssize_t n = process_vm_readv(peer_pid_, &local, 1, &remote, 1, 0);
  if (n != static_cast<ssize_t>(sizeof(*value))) {
    return errno_status("process_vm_readv", peer_pid_, n < 0 ? errno : EFAULT);
  }
  return absl::OkStatus();
}

absl::Status DirectAllReduce::attach(const PeerMemoryAddress& peer) {
  if (peer.pid == 0 || peer.pid > static_cast<uint64_t>(INT32_MAX) || peer.words == 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad peer memory address: pid ", peer.pid));
  }
  peer_pid_ = static_cast<pid_t>(peer.pid);
  peer_words_ = peer.words;
  uint64_t nonce = 0;
  absl::Status status = read_peer_word(offsetof(Words, nonce), &nonce);
  peer_nonce_ = peer.nonce;
  if (status.ok() && nonce != peer.nonce) {
    status = absl::FailedPreconditionError(
        absl::StrCat("pid ", peer.pid, " on this host is not the peer (another pid namespace)"));
  }
  if (!status.ok()) peer_pid_ = 0;
  return status;
}

absl::StatusOr<bool> DirectAllReduce::agree(bool allowed, Deadline deadline,
                                            DirectChannel& channel) {
  // Tags 0 and 1 (op 0); the ops use 2 and up.
  const PeerMemoryAddress mine = allowed ? own_address() : PeerMemoryAddress{};
  PeerMemoryAddress theirs;
  {
    TANDEM_ASSIGN_OR_RETURN(auto recv, channel.post_recv(&theirs, sizeof(theirs), 0));
    TANDEM_ASSIGN_OR_RETURN(auto send, channel.post_send(&mine, sizeof(mine), 0));
    TANDEM_RETURN_IF_ERROR(send->wait(deadline));
    TANDEM_RETURN_IF_ERROR(recv->wait(deadline));
  }
  uint8_t ok = 0, peer_ok = 0;
  if (allowed) {
    absl::Status attached = attach(theirs);
    ok = attached.ok() ? 1 : 0;
    if (!attached.ok()) refusal_ = attached.ToString();
  }
  TANDEM_ASSIGN_OR_RETURN(auto recv, channel.post_recv(&peer_ok, 1, 1));
  TANDEM_ASSIGN_OR_RETURN(auto send, channel.post_send(&ok, 1, 1));
  TANDEM_RETURN_IF_ERROR(send->wait(deadline));
  TANDEM_RETURN_IF_ERROR(recv->wait(deadline));
  if (ok == 0 || peer_ok == 0) {
    peer_pid_ = 0;
    return false;
  }
  return true;
}

absl::Status DirectAllReduce::run(int rank, void* data, size_t count, DataType type,
                                  Deadline deadline, DirectChannel& channel) {
  const uint64_t op = next_op_++;
  words_->entered.store(op);
  const DirectHeader out{.op = op,
                         .addr = reinterpret_cast<uint64_t>(data),
                         .bytes = count * dtype_size(type),
                         .type = static_cast<uint32_t>(type)};
  // The peer's "done" may come before this rank is done: post its receive now.
  absl::StatusOr<std::unique_ptr<Request>> done =
      channel.post_recv(&done_in_, sizeof(done_in_), op << 1 | 1);
  absl::Status status = done.status();
  // Until this rank's header may have gone out, the peer cannot know where
  // to write: a failure before that needs no fence (an op that fails at
  // once after abort() returns at once).
  bool exposed = false;
  if (status.ok()) status = swap_headers(rank, out, deadline, channel, &exposed);
  if (status.ok()) {
    status = sum_half(rank, static_cast<std::byte*>(data), count, type, op, deadline, channel);
  }
  if (status.ok()) {
    words_->exit.store(op << 1);
    done_out_ = op;
    absl::StatusOr<std::unique_ptr<Request>> sent =
        channel.post_send(&done_out_, sizeof(done_out_), op << 1 | 1);
    status = sent.status();
    if (status.ok()) status = wait_peer_done(op, **done, deadline, channel);
    if (status.ok()) status = (*sent)->wait(deadline);
  }
  if (!status.ok()) {
    if (exposed) {
      fence_peer(op);
    } else {
      words_->exit.store(op << 1 | 1);
    }
  }
  return status;
}

absl::Status DirectAllReduce::swap_headers(int rank, const DirectHeader& out, Deadline deadline,
                                           DirectChannel& channel, bool* exposed) {
  TANDEM_ASSIGN_OR_RETURN(auto recv,
                          channel.post_recv(&peer_header_, sizeof(peer_header_), out.op << 1));
  *exposed = true;
  TANDEM_ASSIGN_OR_RETURN(auto send, channel.post_send(&out, sizeof(out), out.op << 1));
  TANDEM_RETURN_IF_ERROR(send->wait(deadline));
  TANDEM_RETURN_IF_ERROR(recv->wait(deadline));
  const DirectHeader& in = peer_header_;
  if (in.op != out.op || in.bytes != out.bytes || in.type != out.type) {
    return absl::InvalidArgumentError(
        absl::StrCat("all_reduce: rank ", 1 - rank, " sent op ", in.op, ", ", in.bytes,
                     " bytes of type ", in.type, "; rank ", rank, " has op ", out.op, ", ",
                     out.bytes, " bytes of type ", out.type));
  }
  return absl::OkStatus();
}

absl::Status DirectAllReduce::sum_half(int rank, std::byte* data, size_t count, DataType type,
                                       uint64_t op, Deadline deadline, DirectChannel& channel) {
  // Rank r sums half 1 - r, like the message-based exchange of halves.
  const int half = 1 - rank;
  const size_t esize = dtype_size(type);
  const size_t begin = block_begin(count, 2, half) * esize;
  const size_t n = block_count(count, 2, half);
  const size_t per_chunk = kChunkBytes / esize;
  const uint64_t peer_data = peer_header_.addr;
  // The peer's exit word and nonce (adjacent): the nonce proves, before each
  // write, that the pid still belongs to the peer.
  static_assert(offsetof(Words, nonce) == offsetof(Words, exit) + sizeof(uint64_t));
  uint64_t peer_tail[2] = {0, 0};
  uint64_t& peer_exit = peer_tail[0];
  for (size_t done = 0; done < n; done += per_chunk) {
    const size_t elems = std::min(per_chunk, n - done);
    const size_t offset = begin + done * esize;
    const size_t bytes = elems * esize;
    // The peer's chunk and then its exit word, in one call: a peer that gave
    // up on this op gets no write.
    iovec local[2] = {{scratch_.data(), bytes}, {peer_tail, sizeof(peer_tail)}};
    iovec remote[2] = {{reinterpret_cast<void*>(peer_data + offset), bytes},
                       {reinterpret_cast<void*>(peer_words_ + offsetof(Words, exit)),
                        sizeof(peer_tail)}};
    const ssize_t got = process_vm_readv(peer_pid_, local, 2, remote, 2, 0);
    if (got != static_cast<ssize_t>(bytes + sizeof(peer_tail))) {
      return errno_status("process_vm_readv", peer_pid_, got < 0 ? errno : EFAULT);
    }
    if (peer_tail[1] != peer_nonce_) {
      return absl::UnavailableError(absl::StrCat("rank ", 1 - rank, " (pid ", peer_pid_,
                                                 ") is gone: the pid now names another process"));
    }
    // The peer may be done with its half already (exit = op, not failed).
    if (peer_exit == (op << 1 | 1) || peer_exit >> 1 > op) {
      return absl::UnavailableError(
          absl::StrCat("rank ", 1 - rank, " left the all_reduce with an error"));
    }
    reduce_sum(data + offset, scratch_.data(), elems, type);
    iovec source{data + offset, bytes};
    iovec target{reinterpret_cast<void*>(peer_data + offset), bytes};
    const ssize_t put = process_vm_writev(peer_pid_, &source, 1, &target, 1, 0);
    if (put != static_cast<ssize_t>(bytes)) {
      return errno_status("process_vm_writev", peer_pid_, put < 0 ? errno : EFAULT);
    }
    TANDEM_RETURN_IF_ERROR(channel.stopped());
    if (Clock::now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("all_reduce with rank ", 1 - rank, " timed out"));
    }
  }
  return absl::OkStatus();
}

absl::Status DirectAllReduce::wait_peer_done(uint64_t op, Request& done, Deadline deadline,
                                             DirectChannel& channel) {
  Clock::time_point last_look = Clock::now();
  for (;;) {
    if (done.test()) {
      TANDEM_RETURN_IF_ERROR(done.wait(deadline));
      if (done_in_ != op) {
        return absl::InternalError(absl::StrCat("all_reduce: done of op ", done_in_, ", not ", op));
      }
      return absl::OkStatus();
    }
    TANDEM_RETURN_IF_ERROR(channel.stopped());
    const Clock::time_point now = Clock::now();
    if (now >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("all_reduce: the peer (pid ", peer_pid_, ") did not finish in time"));
    }
    // A peer that failed (or was aborted) may be unable to send: look at its
    // exit word now and then. Its death shows here too.
    if (now - last_look > kPeerLookInterval) {
      last_look = now;
      uint64_t peer_exit = 0;
      TANDEM_RETURN_IF_ERROR(read_peer_word(offsetof(Words, exit), &peer_exit));
      if (peer_exit == (op << 1 | 1) || peer_exit >> 1 > op) {
        return absl::UnavailableError(
            absl::StrCat("the peer (pid ", peer_pid_, ") left the all_reduce with an error"));
      }
      sched_yield();
    }
  }
}

void DirectAllReduce::fence_peer(uint64_t op) {
  words_->exit.store(op << 1 | 1);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const Clock::time_point until = Clock::now() + kPeerExitGrace;
  while (Clock::now() < until) {
    uint64_t peer_exit = 0, peer_entered = 0;
    // A peer that is gone writes nothing more.
    if (!read_peer_word(offsetof(Words, exit), &peer_exit).ok()) return;
    if (peer_exit >> 1 >= op) return;
    // Not yet in this op: it will read the exit word before its first write.
    if (!read_peer_word(offsetof(Words, entered), &peer_entered).ok()) return;
    if (peer_entered < op) return;
    sched_yield();
  }
}

namespace {

class DirectSplit final : public Communicator {
 public:
  DirectSplit(std::unique_ptr<Communicator> inner, std::unique_ptr<DirectChannel> channel,
              bool allowed, std::string log_name)
      : inner_(std::move(inner)),
        channel_(std::move(channel)),
        allowed_(allowed),
        log_name_(std::move(log_name)) {}

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string_view backend() const override { return inner_->backend(); }
  std::string link_path(int peer) const override { return inner_->link_path(peer); }
  absl::StatusOr<std::unique_ptr<Request>> isend(const void* data, size_t bytes, int peer,
                                                 uint32_t tag) override {
    return inner_->isend(data, bytes, peer, tag);
  }
  absl::StatusOr<std::unique_ptr<Request>> irecv(void* data, size_t bytes, int peer,
                                                 uint32_t tag) override {
    return inner_->irecv(data, bytes, peer, tag);
  }
  absl::Status all_reduce(void* data, size_t count, DataType type, ReduceOp op,
                          Deadline deadline) override {
    if (!DirectAllReduce::eligible(data, count, type, op)) {
      return inner_->all_reduce(data, count, type, op, deadline);
    }
    if (agreed_ < 0) {
      // The first eligible all_reduce, at the same point on both ranks (the
      // split itself stays a local call that never waits for the peer).
      TANDEM_ASSIGN_OR_RETURN(const bool agreed, direct_.agree(allowed_, deadline, *channel_));
      agreed_ = agreed ? 1 : 0;
      if (!log_name_.empty() && (agreed || !direct_.refusal().empty())) {
        const std::string what = agreed ? "large all_reduce through peer memory (cma)"
                                        : "no direct all_reduce: " + direct_.refusal();
        std::fprintf(stderr, "tandem/ucx: %s: %s\n", log_name_.c_str(), what.c_str());
      }
    }
    if (agreed_ == 0) return inner_->all_reduce(data, count, type, op, deadline);
    return direct_.run(rank(), data, count, type, deadline, *channel_);
  }
  absl::Status all_gather(const void* send, void* recv, size_t count, DataType type,
                          Deadline deadline) override {
    return inner_->all_gather(send, recv, count, type, deadline);
  }
  absl::Status broadcast(void* data, size_t bytes, int root, Deadline deadline) override {
    return inner_->broadcast(data, bytes, root, deadline);
  }
  absl::Status barrier(Deadline deadline) override { return inner_->barrier(deadline); }
  absl::StatusOr<std::unique_ptr<Communicator>> split(std::span<const int> ranks,
                                                      uint32_t group_id) override {
    return inner_->split(ranks, group_id);
  }
  void abort(const absl::Status& reason) override { inner_->abort(reason); }

 private:
  std::unique_ptr<Communicator> inner_;
  std::unique_ptr<DirectChannel> channel_;
  const bool allowed_;
  const std::string log_name_;
  DirectAllReduce direct_;
  int agreed_ = -1;  // unknown until the first eligible all_reduce
};

}  // namespace

std::unique_ptr<Communicator> make_direct_split(std::unique_ptr<Communicator> inner,
                                                std::unique_ptr<DirectChannel> channel,
                                                bool allowed, std::string log_name) {
  return std::make_unique<DirectSplit>(std::move(inner), std::move(channel), allowed,
                                       std::move(log_name));
}

}  // namespace tandem::transport::ucx
