// Large all_reduces between two ranks on one host, through the peer's memory
// (Linux cross-memory attach: process_vm_readv/writev), for the UCX backend
// when UCX itself carries that pair over shared memory (its cma transport).
//
// Why: over UCX's tag protocols a 2-rank all_reduce copies each byte twice
// on each rank (the peer's half into scratch, then the sums back), and the
// sum is a third pass. Here each rank reads a chunk of the peer's half into a
// cache-sized scratch, adds it into its own copy, and writes the sum straight
// into the peer's buffer: the memory traffic of one copy per byte, the same
// as the one-way ucx_perftest the bandwidth goal is measured against.
//
// The protocol (op k, both ranks alike):
//   1. publish entered = k, then swap headers (buffer address, size, type)
//      over UCX, which also orders the op with the collectives around it;
//   2. per chunk: read the peer's chunk together with the peer's exit word,
//      stop if the peer gave up on op k, add, write the sum into the peer;
//   3. publish exit = k (done) and send a "done" message over UCX; wait for
//      the peer's (a message arrives sooner than a poll of the peer's memory,
//      a syscall of over a microsecond, would see it), reading the peer's
//      exit word now and then in case it failed and cannot send.
// A rank that fails or is aborted after step 1 publishes exit = k (failed)
// and, before returning, waits (bounded) until the peer has either left op k
// or not yet entered it: a peer checks the exit word before each write, so no
// write lands in the caller's buffer after the call returns. A dead peer
// (ESRCH) writes nothing more and is reported as UNAVAILABLE at once.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "transport/communicator.h"

namespace tandem::transport::ucx {

// What a rank sends its peer so that the peer can reach its memory.
struct PeerMemoryAddress {
  uint64_t pid = 0;
  uint64_t words = 0;  // address of the rank's DirectAllReduce words
  uint64_t nonce = 0;  // read back through the attach: the right process
};
static_assert(sizeof(PeerMemoryAddress) == 24, "wire layout");

// Swapped over UCX at the start of every op; every field is checked.
struct DirectHeader {
  uint64_t op = 0;
  uint64_t addr = 0;
  uint64_t bytes = 0;
  uint32_t type = 0;
  uint32_t reserved = 0;
};
static_assert(sizeof(DirectHeader) == 32, "wire layout");

// The small messages of the protocol, with the peer, over the communicator.
class DirectChannel {
 public:
  virtual ~DirectChannel() = default;
  // `tag` is the protocol's own (op and message kind); the channel keeps it
  // apart from every user and collective tag.
  virtual absl::StatusOr<std::unique_ptr<Request>> post_send(const void* data, size_t bytes,
                                                             uint64_t tag) = 0;
  virtual absl::StatusOr<std::unique_ptr<Request>> post_recv(void* data, size_t bytes,
                                                             uint64_t tag) = 0;
  // Non-OK once the communicator was aborted: the op stops at once.
  virtual absl::Status stopped() = 0;
};

class DirectAllReduce {
 public:
  // Above this size a 2-rank all_reduce takes the direct path. Below, the
  // default latency path (one exchange) is as fast or faster: the direct
  // path has ~6 us of fixed cost (each process_vm_readv/writev call costs
  // over a microsecond, and it swaps two small messages). Medians on the
  // 2-core VM, default against direct: over shared memory 6-8 against
  // 6.5-9 us at 16 KiB, 9-13 against 8-11 at 32 KiB, 17-21 against 12-17 at
  // 64 KiB; with peer failure detection on (UCX's messages over TCP) 17
  // against 30 us at 16 KiB, 45 against 24-32 at 32 KiB.
  static constexpr size_t kMinBytes = (16 << 10) + 1;
  // Whether an all_reduce with these arguments would take the direct path
  // (the same answer on both ranks of a well-formed call).
  static bool eligible(const void* data, size_t count, DataType type, ReduceOp op);

  DirectAllReduce();
  DirectAllReduce(const DirectAllReduce&) = delete;
  DirectAllReduce& operator=(const DirectAllReduce&) = delete;

  PeerMemoryAddress own_address() const;
  // Both ranks call it, before any run(): swaps addresses with the peer,
  // attaches, and swaps verdicts. True when both ranks can take the path
  // (`allowed` on both, and each reached the other's memory); otherwise
  // refusal() may say why this side could not.
  absl::StatusOr<bool> agree(bool allowed, Deadline deadline, DirectChannel& channel);
  const std::string& refusal() const { return refusal_; }

  // In-place sum of `count` elements with the attached peer; `rank` is 0 or
  // 1, and the peer calls it with the same count and type.
  absl::Status run(int rank, void* data, size_t count, DataType type, Deadline deadline,
                   DirectChannel& channel);

 private:
  // The words the peer reads: op numbers, so a stale value never matches.
  struct alignas(64) Words {
    std::atomic<uint64_t> entered{0};
    std::atomic<uint64_t> exit{0};  // op << 1 | failed
    uint64_t nonce = 0;
  };

  // `exposed` is set once the header may have reached the peer.
  absl::Status swap_headers(int rank, const DirectHeader& out, Deadline deadline,
                            DirectChannel& channel, bool* exposed);
  absl::Status sum_half(int rank, std::byte* data, size_t count, DataType type, uint64_t op,
                        Deadline deadline, DirectChannel& channel);
  // Waits for the peer's "done" message of `op` (received by `done`).
  absl::Status wait_peer_done(uint64_t op, Request& done, Deadline deadline,
                              DirectChannel& channel);
  // After a failure on this side: no write of the peer may still be coming.
  void fence_peer(uint64_t op);
  absl::Status read_peer_word(size_t offset, uint64_t* value);
  // Reads the peer's nonce through cross-memory attach: fails when the peer
  // is another host, another pid namespace, or the kernel forbids it.
  absl::Status attach(const PeerMemoryAddress& peer);

  std::unique_ptr<Words> words_;  // a stable address, published to the peer
  std::vector<std::byte> scratch_;
  DirectHeader peer_header_;  // of the current op
  uint64_t done_out_ = 0, done_in_ = 0;  // the "done" messages' payloads
  pid_t peer_pid_ = 0;
  uint64_t peer_words_ = 0;
  uint64_t peer_nonce_ = 0;
  uint64_t next_op_ = 1;  // op 0: the agreement's messages
  std::string refusal_;
};

// A 2-rank sub-communicator (a TP group of 2) whose large all_reduces take
// the direct path, agreed with the peer at the first of them; everything
// else goes to `inner`, the default split it wraps. A non-empty `log_name`
// ("rank 0, group 2") logs the outcome of the agreement on stderr.
std::unique_ptr<Communicator> make_direct_split(std::unique_ptr<Communicator> inner,
                                                std::unique_ptr<DirectChannel> channel,
                                                bool allowed, std::string log_name);

}  // namespace tandem::transport::ucx
