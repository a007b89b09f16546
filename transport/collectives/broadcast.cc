// Default broadcast on isend/irecv: a binomial tree rooted at `root`, cut into
// chunks so that a rank forwards chunk c to its children while chunk c + 1 is
// still arriving (log2(p) latencies for small messages, close to one link's
// bandwidth for large ones).
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "transport/collectives/collective_state.h"
#include "transport/communicator.h"

namespace tandem::transport {

absl::Status Communicator::broadcast(void* data, size_t bytes, int root, Deadline deadline) {
  const int p = size();
  if (root < 0 || root >= p) {
    return absl::InvalidArgumentError(
        absl::StrCat("broadcast: root ", root, " is not a rank of a world of ", p));
  }
  if (data == nullptr && bytes > 0) return absl::InvalidArgumentError("broadcast: null buffer");
  CollectiveState& state = *collective_state_;
  const uint32_t tag = state.next_tag();
  if (p == 1 || bytes == 0) return absl::OkStatus();

  RequestListGuard sends_guard(state.sends);
  RequestListGuard recvs_guard(state.recvs);
  auto* buf = static_cast<std::byte*>(data);
  const int vrank = ring_mod(rank() - root, p);
  // Parent: vrank with its lowest set bit cleared; children: vrank + 2^k for
  // every 2^k below that bit (all powers below p for the root).
  int mask = 1;
  int parent = -1;
  while (mask < p) {
    if (vrank & mask) {
      parent = ring_mod(vrank - mask + root, p);
      break;
    }
    mask <<= 1;
  }
  const size_t per_chunk = kPipelineChunkBytes;
  const size_t chunks = n_chunks(bytes, per_chunk);
  if (parent >= 0) {
    for (size_t c = 0; c < chunks; ++c) {
      TANDEM_ASSIGN_OR_RETURN(
          auto request, irecv(buf + c * per_chunk, chunk_count(bytes, per_chunk, c), parent, tag));
      state.recvs.add(std::move(request));
    }
  }
  for (size_t c = 0; c < chunks; ++c) {
    if (parent >= 0) TANDEM_RETURN_IF_ERROR(state.recvs.wait(c, deadline));
    // Largest subtree first: it has the longest way to go.
    for (int m = mask >> 1; m > 0; m >>= 1) {
      if (vrank + m >= p) continue;
      const int child = ring_mod(vrank + m + root, p);
      TANDEM_ASSIGN_OR_RETURN(
          auto request, isend(buf + c * per_chunk, chunk_count(bytes, per_chunk, c), child, tag));
      state.sends.add(std::move(request));
    }
  }
  return state.sends.wait_all(deadline);
}

}  // namespace tandem::transport
