// Default barrier on isend/irecv: dissemination, ceil(log2(p)) rounds of
// empty messages; in round k rank r signals r + 2^k and waits for r - 2^k.
// No rank leaves before every rank has entered.
#include "common/status.h"
#include "transport/collectives/collective_state.h"
#include "transport/communicator.h"

namespace tandem::transport {

absl::Status Communicator::barrier(Deadline deadline) {
  CollectiveState& state = *collective_state_;
  const uint32_t tag = state.next_tag();
  const int p = size();
  const int r = rank();
  // Empty messages, but valid pointers for backends that insist.
  const std::byte out{0};
  std::byte in{0};
  for (int k = 1; k < p; k <<= 1) {
    TANDEM_RETURN_IF_ERROR(
        send_recv(*this, &out, 0, ring_mod(r + k, p), &in, 0, ring_mod(r - k, p), tag, deadline));
  }
  return absl::OkStatus();
}

}  // namespace tandem::transport
