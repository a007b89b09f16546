#include "transport/communicator.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "transport/collectives/collective_state.h"

namespace tandem::transport {

size_t dtype_size(DataType type) {
  switch (type) {
    case DataType::kF32:
    case DataType::kI32:
      return 4;
    case DataType::kF16:
    case DataType::kBF16:
      return 2;
    case DataType::kU8:
      return 1;
  }
  return 0;
}

std::string_view dtype_name(DataType type) {
  switch (type) {
    case DataType::kF32:
      return "f32";
    case DataType::kF16:
      return "f16";
    case DataType::kBF16:
      return "bf16";
    case DataType::kI32:
      return "i32";
    case DataType::kU8:
      return "u8";
  }
  return "unknown";
}

Communicator::Communicator() : collective_state_(std::make_unique<CollectiveState>()) {}
Communicator::~Communicator() = default;

std::string Communicator::link_path(int) const { return ""; }

// On DEADLINE_EXCEEDED (or any error) the request goes out of scope here,
// which cancels it: the caller's buffer is free again when we return.
absl::Status Communicator::send(const void* data, size_t bytes, int peer, uint32_t tag,
                                Deadline deadline) {
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Request> request, isend(data, bytes, peer, tag));
  return request->wait(deadline);
}

absl::Status Communicator::recv(void* data, size_t bytes, int peer, uint32_t tag,
                                Deadline deadline) {
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Request> request, irecv(data, bytes, peer, tag));
  return request->wait(deadline);
}

absl::Status RequestList::wait(size_t i, Deadline deadline) {
  TANDEM_CHECK(i < requests_.size() && requests_[i] != nullptr);
  TANDEM_RETURN_IF_ERROR(requests_[i]->wait(deadline));
  requests_[i].reset();
  return absl::OkStatus();
}

absl::Status RequestList::wait_all(Deadline deadline) {
  for (auto& request : requests_) {
    if (request == nullptr) continue;
    TANDEM_RETURN_IF_ERROR(request->wait(deadline));
    request.reset();
  }
  requests_.clear();
  return absl::OkStatus();
}

}  // namespace tandem::transport

namespace tandem::transport {

absl::Status send_recv(Communicator& comm, const void* send, size_t send_bytes, int dst, void* recv,
                       size_t recv_bytes, int src, uint32_t tag, Deadline deadline) {
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Request> in, comm.irecv(recv, recv_bytes, src, tag));
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Request> out, comm.isend(send, send_bytes, dst, tag));
  TANDEM_RETURN_IF_ERROR(in->wait(deadline));
  return out->wait(deadline);
}

}  // namespace tandem::transport
