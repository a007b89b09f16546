// RAII owners of the CUDA and NCCL handles of the NCCL backend: a stream, an
// event, a small device buffer and the NCCL communicator.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <string>
#include <utility>

#include "absl/status/status.h"

namespace tandem::transport::nccl {

// UNAVAILABLE (INTERNAL for invalid use) naming the call and the error.
absl::Status cuda_error(const std::string& what, cudaError_t e);
absl::Status nccl_error(const std::string& what, ncclResult_t r);

template <typename T, void (*Destroy)(T)>
class Handle {
 public:
  Handle() = default;
  explicit Handle(T h) : h_(h) {}
  Handle(Handle&& o) noexcept : h_(std::exchange(o.h_, T{})) {}
  Handle& operator=(Handle&& o) noexcept {
    std::swap(h_, o.h_);
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }
  T get() const { return h_; }
  T release() { return std::exchange(h_, T{}); }
  void reset() {
    if (h_ != T{}) Destroy(std::exchange(h_, T{}));
  }

 private:
  T h_{};
};

inline void destroy_stream(cudaStream_t s) { cudaStreamDestroy(s); }
inline void destroy_event(cudaEvent_t e) { cudaEventDestroy(e); }
inline void free_device(void* p) { cudaFree(p); }
// A healthy communicator is destroyed; an aborted one was already released.
inline void destroy_comm(ncclComm_t c) { ncclCommDestroy(c); }

using Stream = Handle<cudaStream_t, destroy_stream>;
using Event = Handle<cudaEvent_t, destroy_event>;
using DeviceBuffer = Handle<void*, free_device>;
using Comm = Handle<ncclComm_t, destroy_comm>;

}  // namespace tandem::transport::nccl
