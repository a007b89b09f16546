// RAII owners of UCP's C handles: config, context, worker, endpoints.
#pragma once

#include <ucp/api/ucp.h>

#include <string>
#include <utility>

#include "absl/status/status.h"

namespace tandem::transport::ucx {

absl::Status ucs_error(const std::string& what, ucs_status_t status);

class Config {
 public:
  Config() = default;
  explicit Config(ucp_config_t* c) : c_(c) {}
  Config(Config&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
  Config& operator=(Config&&) = delete;
  ~Config() {
    if (c_ != nullptr) ucp_config_release(c_);
  }
  ucp_config_t* get() const { return c_; }

 private:
  ucp_config_t* c_ = nullptr;
};

class Context {
 public:
  Context() = default;
  explicit Context(ucp_context_h c) : c_(c) {}
  Context(Context&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
  Context& operator=(Context&& o) noexcept {
    std::swap(c_, o.c_);
    return *this;
  }
  ~Context() {
    if (c_ != nullptr) ucp_cleanup(c_);
  }
  ucp_context_h get() const { return c_; }

 private:
  ucp_context_h c_ = nullptr;
};

class Worker {
 public:
  Worker() = default;
  explicit Worker(ucp_worker_h w) : w_(w) {}
  Worker(Worker&& o) noexcept : w_(std::exchange(o.w_, nullptr)) {}
  Worker& operator=(Worker&& o) noexcept {
    std::swap(w_, o.w_);
    return *this;
  }
  ~Worker() {
    if (w_ != nullptr) ucp_worker_destroy(w_);
  }
  ucp_worker_h get() const { return w_; }

 private:
  ucp_worker_h w_ = nullptr;
};

// The worker's own address, as bytes to publish through the store.
class WorkerAddress {
 public:
  WorkerAddress(ucp_worker_h w, ucp_address_t* a, size_t n) : w_(w), a_(a), n_(n) {}
  WorkerAddress(const WorkerAddress&) = delete;
  WorkerAddress& operator=(const WorkerAddress&) = delete;
  ~WorkerAddress() { ucp_worker_release_address(w_, a_); }
  std::string bytes() const { return std::string(reinterpret_cast<const char*>(a_), n_); }

 private:
  ucp_worker_h w_;
  ucp_address_t* a_;
  size_t n_;
};

}  // namespace tandem::transport::ucx
