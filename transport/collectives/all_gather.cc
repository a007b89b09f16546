// Default all_gather on isend/irecv: a direct exchange (every rank sends its
// block to every other, one latency) for small totals and 2 ranks; a chunked
// ring beyond, which sends each byte over each link once.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "transport/collectives/collective_state.h"
#include "transport/communicator.h"

namespace tandem::transport {
namespace {

// Direct exchange up to this many bytes gathered: p - 1 messages per rank
// in flight at once, which for small blocks costs less than p - 1 ring steps.
constexpr size_t kAllGatherDirectBytes = 64 << 10;

absl::Status all_gather_direct(Communicator& comm, CollectiveState& state, uint32_t tag,
                               std::byte* recv, size_t block_bytes, Deadline deadline) {
  const int p = comm.size();
  const int r = comm.rank();
  RequestListGuard sends_guard(state.sends);
  RequestListGuard recvs_guard(state.recvs);
  for (int i = 1; i < p; ++i) {
    const int src = ring_mod(r - i, p);
    TANDEM_ASSIGN_OR_RETURN(auto request,
                            comm.irecv(recv + src * block_bytes, block_bytes, src, tag));
    state.recvs.add(std::move(request));
  }
  for (int i = 1; i < p; ++i) {
    const int dst = ring_mod(r + i, p);
    TANDEM_ASSIGN_OR_RETURN(auto request,
                            comm.isend(recv + r * block_bytes, block_bytes, dst, tag));
    state.sends.add(std::move(request));
  }
  TANDEM_RETURN_IF_ERROR(state.recvs.wait_all(deadline));
  return state.sends.wait_all(deadline);
}

absl::Status all_gather_ring(Communicator& comm, CollectiveState& state, uint32_t tag,
                             std::byte* recv, size_t block_bytes, Deadline deadline) {
  const int p = comm.size();
  const int r = comm.rank();
  const int next = ring_mod(r + 1, p);
  const int prev = ring_mod(r - 1, p);
  const size_t per_chunk = kPipelineChunkBytes;
  const size_t chunks = n_chunks(block_bytes, per_chunk);
  RequestListGuard sends_guard(state.sends);
  RequestListGuard recvs_guard(state.recvs);
  auto chunk_ptr = [&](int block, size_t c) { return recv + block * block_bytes + c * per_chunk; };
  auto send_chunk = [&](int block, size_t c) -> absl::Status {
    TANDEM_ASSIGN_OR_RETURN(
        auto request,
        comm.isend(chunk_ptr(block, c), chunk_count(block_bytes, per_chunk, c), next, tag));
    state.sends.add(std::move(request));
    return absl::OkStatus();
  };
  // Step t receives block r - t - 1; every block lands in its own place, so
  // all receives can be posted up front.
  for (int t = 0; t <= p - 2; ++t) {
    const int block = ring_mod(r - t - 1, p);
    for (size_t c = 0; c < chunks; ++c) {
      TANDEM_ASSIGN_OR_RETURN(
          auto request,
          comm.irecv(chunk_ptr(block, c), chunk_count(block_bytes, per_chunk, c), prev, tag));
      state.recvs.add(std::move(request));
    }
  }
  for (size_t c = 0; c < chunks; ++c) TANDEM_RETURN_IF_ERROR(send_chunk(r, c));
  size_t index = 0;
  for (int t = 0; t <= p - 2; ++t) {
    const int block = ring_mod(r - t - 1, p);
    for (size_t c = 0; c < chunks; ++c) {
      TANDEM_RETURN_IF_ERROR(state.recvs.wait(index++, deadline));
      if (t + 1 <= p - 2) TANDEM_RETURN_IF_ERROR(send_chunk(block, c));
    }
  }
  return state.sends.wait_all(deadline);
}

}  // namespace

absl::Status Communicator::all_gather(const void* send, void* recv, size_t count, DataType type,
                                      Deadline deadline) {
  const size_t esize = dtype_size(type);
  const size_t p = static_cast<size_t>(size());
  if (count > SIZE_MAX / esize / p) {
    return absl::InvalidArgumentError(absl::StrCat("all_gather: count ", count, " too large"));
  }
  if (count > 0 && (send == nullptr || recv == nullptr)) {
    return absl::InvalidArgumentError("all_gather: null buffer");
  }
  CollectiveState& state = *collective_state_;
  const uint32_t tag = state.next_tag();
  if (count == 0) return absl::OkStatus();
  const size_t block_bytes = count * esize;
  auto* out = static_cast<std::byte*>(recv);
  std::byte* mine = out + static_cast<size_t>(rank()) * block_bytes;
  if (mine != send) std::memmove(mine, send, block_bytes);
  if (p == 1) return absl::OkStatus();
  if (p == 2 || block_bytes * p <= kAllGatherDirectBytes) {
    return all_gather_direct(*this, state, tag, out, block_bytes, deadline);
  }
  return all_gather_ring(*this, state, tag, out, block_bytes, deadline);
}

}  // namespace tandem::transport
