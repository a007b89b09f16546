#include "transport/local/local_world.h"

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tandem::transport {
namespace {

struct Message {
  int src;
  uint32_t tag;
  std::vector<std::byte> data;
};

// A posted receive. It lives in the Request; the mailbox holds a pointer while
// it is pending, and every access happens under the mailbox's mutex.
struct PostedRecv {
  int src;
  uint32_t tag;
  std::byte* data;
  size_t bytes;
  bool done = false;
  bool linked = false;  // in the mailbox's `posted` list
  absl::Status status;
  std::list<PostedRecv*>::iterator position;
};

// Rank i's incoming side. Its mutex guards everything here; the condition
// variable wakes rank i's waiters.
struct Mailbox {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Message> unexpected;  // arrived before a matching receive, in order
  std::list<PostedRecv*> posted;   // waiting for a message, in posting order
};

// Death of a rank, published once: `reason` is written before `dead` is set
// (release) and never changed after, so a reader that saw `dead` may read it.
struct Liveness {
  std::atomic<bool> dead{false};
  absl::Status reason;
};

struct World {
  explicit World(int n) : boxes(n), liveness(n) {
    for (auto& box : boxes) box = std::make_unique<Mailbox>();
    for (auto& l : liveness) l = std::make_unique<Liveness>();
  }
  std::vector<std::unique_ptr<Mailbox>> boxes;
  std::vector<std::unique_ptr<Liveness>> liveness;
  std::mutex death_mu;  // serializes the writers of `liveness`
};

absl::Status peer_failure(int peer, const absl::Status& reason) {
  return absl::UnavailableError(absl::StrCat("peer ", peer, " aborted: ", reason.message()));
}
absl::Status self_failure(int rank, const absl::Status& reason) {
  return absl::AbortedError(absl::StrCat("rank ", rank, " aborted: ", reason.message()));
}

// Completes `recv` with `message` (mailbox mutex held).
void deliver(PostedRecv& recv, const Message& message) {
  recv.done = true;
  if (message.data.size() != recv.bytes) {
    recv.status = absl::InvalidArgumentError(
        absl::StrCat("message from rank ", message.src, " with tag ", message.tag, " is ",
                     message.data.size(), " bytes; the receive expects ", recv.bytes));
    return;
  }
  if (recv.bytes > 0) std::memcpy(recv.data, message.data.data(), recv.bytes);
  recv.status = absl::OkStatus();
}

class DoneRequest final : public Request {
 public:
  absl::Status wait(Deadline) override { return absl::OkStatus(); }
  bool test() override { return true; }
};

class RecvRequest final : public Request {
 public:
  RecvRequest(std::shared_ptr<World> world, int rank) : world_(std::move(world)), rank_(rank) {}
  ~RecvRequest() override {
    // Cancel: once unlinked under the mutex, no sender touches the buffer.
    Mailbox& box = *world_->boxes[rank_];
    std::lock_guard<std::mutex> lock(box.mu);
    if (recv_.linked) box.posted.erase(recv_.position);
  }

  absl::Status wait(Deadline deadline) override {
    Mailbox& box = *world_->boxes[rank_];
    std::unique_lock<std::mutex> lock(box.mu);
    if (!box.cv.wait_until(lock, deadline, [&] { return recv_.done; })) {
      return absl::DeadlineExceededError(absl::StrCat("rank ", rank_, ": receive from rank ",
                                                      recv_.src, " with tag ", recv_.tag,
                                                      " timed out"));
    }
    return recv_.status;
  }
  bool test() override {
    std::lock_guard<std::mutex> lock(world_->boxes[rank_]->mu);
    return recv_.done;
  }

  PostedRecv& state() { return recv_; }

 private:
  std::shared_ptr<World> world_;
  int rank_;
  PostedRecv recv_;
};

class LocalCommunicator final : public Communicator {
 public:
  LocalCommunicator(std::shared_ptr<World> world, int rank)
      : world_(std::move(world)), rank_(rank) {}
  ~LocalCommunicator() override {
    abort(absl::UnavailableError(absl::StrCat("rank ", rank_, " closed its communicator")));
  }

  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(world_->boxes.size()); }
  std::string_view backend() const override { return "local"; }

  absl::StatusOr<std::unique_ptr<Request>> isend(const void* data, size_t bytes, int peer,
                                                 uint32_t tag) override {
    TANDEM_RETURN_IF_ERROR(check_args(data, bytes, peer));
    TANDEM_RETURN_IF_ERROR(check_alive(peer));
    Message message{rank_, tag, std::vector<std::byte>(bytes)};
    if (bytes > 0) std::memcpy(message.data.data(), data, bytes);
    Mailbox& box = *world_->boxes[peer];
    {
      std::lock_guard<std::mutex> lock(box.mu);
      PostedRecv* match = nullptr;
      for (PostedRecv* recv : box.posted) {
        if (recv->src == rank_ && recv->tag == tag) {
          match = recv;
          break;
        }
      }
      if (match == nullptr) {
        box.unexpected.push_back(std::move(message));
        return std::make_unique<DoneRequest>();
      }
      box.posted.erase(match->position);
      match->linked = false;
      deliver(*match, message);
    }
    box.cv.notify_all();
    return std::make_unique<DoneRequest>();
  }

  absl::StatusOr<std::unique_ptr<Request>> irecv(void* data, size_t bytes, int peer,
                                                 uint32_t tag) override {
    TANDEM_RETURN_IF_ERROR(check_args(data, bytes, peer));
    auto request = std::make_unique<RecvRequest>(world_, rank_);
    PostedRecv& recv = request->state();
    recv.src = peer;
    recv.tag = tag;
    recv.data = static_cast<std::byte*>(data);
    recv.bytes = bytes;
    Mailbox& box = *world_->boxes[rank_];
    std::lock_guard<std::mutex> lock(box.mu);
    // Checked under the lock: an abort sweeps this mailbox under it after
    // publishing the death, so no receive slips in between and hangs.
    const Liveness& me = *world_->liveness[rank_];
    if (me.dead.load(std::memory_order_acquire)) return self_failure(rank_, me.reason);
    for (auto it = box.unexpected.begin(); it != box.unexpected.end(); ++it) {
      if (it->src == peer && it->tag == tag) {
        deliver(recv, *it);
        box.unexpected.erase(it);
        return request;
      }
    }
    // Messages already here are still delivered; only a wait for one that a
    // dead peer will never send fails.
    const Liveness& source = *world_->liveness[peer];
    if (source.dead.load(std::memory_order_acquire)) return peer_failure(peer, source.reason);
    box.posted.push_back(&recv);
    recv.linked = true;
    recv.position = std::prev(box.posted.end());
    return request;
  }

  void abort(const absl::Status& reason) override {
    {
      std::lock_guard<std::mutex> lock(world_->death_mu);
      Liveness& me = *world_->liveness[rank_];
      if (me.dead.load(std::memory_order_relaxed)) return;
      me.reason = reason.ok() ? absl::AbortedError("abort() with an OK status") : reason;
      me.dead.store(true, std::memory_order_release);
    }
    const absl::Status& why = world_->liveness[rank_]->reason;
    for (int i = 0; i < size(); ++i) {
      Mailbox& box = *world_->boxes[i];
      {
        std::lock_guard<std::mutex> lock(box.mu);
        for (auto it = box.posted.begin(); it != box.posted.end();) {
          PostedRecv& recv = **it;
          if (i == rank_ || recv.src == rank_) {
            recv.done = true;
            recv.linked = false;
            recv.status = i == rank_ ? self_failure(rank_, why) : peer_failure(rank_, why);
            it = box.posted.erase(it);
          } else {
            ++it;
          }
        }
      }
      box.cv.notify_all();
    }
  }

 private:
  absl::Status check_args(const void* data, size_t bytes, int peer) const {
    if (peer < 0 || peer >= size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("peer ", peer, " is not a rank of a world of ", size()));
    }
    if (data == nullptr && bytes > 0) return absl::InvalidArgumentError("null buffer");
    return absl::OkStatus();
  }
  absl::Status check_alive(int peer) const {
    const Liveness& me = *world_->liveness[rank_];
    if (me.dead.load(std::memory_order_acquire)) return self_failure(rank_, me.reason);
    const Liveness& other = *world_->liveness[peer];
    if (other.dead.load(std::memory_order_acquire)) return peer_failure(peer, other.reason);
    return absl::OkStatus();
  }

  std::shared_ptr<World> world_;
  int rank_;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> make_local_world(int n_ranks) {
  TANDEM_CHECK(n_ranks >= 1);
  auto world = std::make_shared<World>(n_ranks);
  std::vector<std::unique_ptr<Communicator>> comms;
  comms.reserve(n_ranks);
  for (int i = 0; i < n_ranks; ++i) comms.push_back(std::make_unique<LocalCommunicator>(world, i));
  return comms;
}

}  // namespace tandem::transport
