// Internal state and helpers of the default collectives (built on isend/irecv
// only). Not part of the public API.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "transport/communicator.h"

namespace tandem::transport {

// Bit 24 marks a collective's tag; the low 24 bits count collectives, wrapped.
inline constexpr uint32_t kCollectiveTagBit = kMaxUserTag;
// Tags of one communicator (user and collective) stay below this; a split maps
// them into the parent's space above it.
inline constexpr uint32_t kCommTagSpace = kMaxUserTag << 1;
// Messages larger than this are cut into chunks so that forwarding (ring,
// tree) overlaps with receiving: a few hundred microseconds of a 10-25 GB/s
// link, small enough to pipeline an 8-rank ring over a few MB.
inline constexpr size_t kPipelineChunkBytes = 128 << 10;

// Requests of one collective. The owner clears it on every exit path, which
// destroys (cancels) whatever is still pending, so an error never leaves a
// request touching the caller's buffers. clear() keeps the capacity: small
// collectives allocate nothing for the list after the first call.
class RequestList {
 public:
  RequestList() = default;
  RequestList(const RequestList&) = delete;
  RequestList& operator=(const RequestList&) = delete;
  ~RequestList() { clear(); }

  void add(std::unique_ptr<Request> request) { requests_.push_back(std::move(request)); }
  size_t size() const { return requests_.size(); }
  Request& operator[](size_t i) { return *requests_[i]; }
  // Waits for request i and releases it.
  absl::Status wait(size_t i, Deadline deadline);
  // Waits for every request still held, in order; stops at the first error.
  absl::Status wait_all(Deadline deadline);
  void clear() { requests_.clear(); }

 private:
  std::vector<std::unique_ptr<Request>> requests_;
};

// Clears a RequestList when the collective returns, whichever way.
class RequestListGuard {
 public:
  explicit RequestListGuard(RequestList& list) : list_(list) {}
  RequestListGuard(const RequestListGuard&) = delete;
  RequestListGuard& operator=(const RequestListGuard&) = delete;
  ~RequestListGuard() { list_.clear(); }

 private:
  RequestList& list_;
};

struct CollectiveState {
  uint32_t sequence = 0;
  std::vector<std::byte> scratch;  // grown on demand, never shrunk
  RequestList sends;
  RequestList recvs;

  // Tag of the next collective; every rank advances it in step.
  uint32_t next_tag() {
    const uint32_t tag = kCollectiveTagBit | (sequence & (kMaxUserTag - 1));
    ++sequence;
    return tag;
  }
  std::byte* scratch_bytes(size_t bytes) {
    if (scratch.size() < bytes) scratch.resize(bytes);
    return scratch.data();
  }
};

}  // namespace tandem::transport

namespace tandem::transport {

// Posts a receive from `src` and a send to `dst` and waits for both: one step
// of an exchange. The receive is posted first so that a backend never has to
// buffer the incoming message as unexpected.
absl::Status send_recv(Communicator& comm, const void* send, size_t send_bytes, int dst, void* recv,
                       size_t recv_bytes, int src, uint32_t tag, Deadline deadline);

// Number of pipeline chunks of `count` elements of `elem_size` bytes, and the
// element count of chunk c.
inline size_t chunk_elems(size_t elem_size) {
  return kPipelineChunkBytes / elem_size > 0 ? kPipelineChunkBytes / elem_size : 1;
}
inline size_t n_chunks(size_t count, size_t per_chunk) {
  return (count + per_chunk - 1) / per_chunk;
}
inline size_t chunk_count(size_t count, size_t per_chunk, size_t c) {
  const size_t begin = c * per_chunk;
  return count - begin < per_chunk ? count - begin : per_chunk;
}

// Block i of `count` elements cut into n near-equal blocks (the first
// count % n one longer).
inline size_t block_begin(size_t count, int n, int i) {
  const size_t q = count / n, rem = count % n, ui = static_cast<size_t>(i);
  return ui * q + (ui < rem ? ui : rem);
}
inline size_t block_count(size_t count, int n, int i) {
  return count / n + (static_cast<size_t>(i) < count % n ? 1 : 0);
}
inline int ring_mod(int x, int n) { return ((x % n) + n) % n; }

}  // namespace tandem::transport
