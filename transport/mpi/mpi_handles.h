// RAII owners of MPI's process-wide state and handles: the initialised
// library itself (Runtime: MPI_Init_thread once, MPI_Finalize after its last
// user is gone, at exit at the latest) and a communicator (Comm).
#pragma once

#include <mpi.h>

#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tandem::transport::mpi {

// UNAVAILABLE naming the call and MPI's own error string.
absl::Status mpi_error(const std::string& what, int code);

class Runtime {
 public:
  // The process's MPI, initialised on the first call (MPI_THREAD_MULTIPLE
  // requested, at least SERIALIZED required). When someone else already
  // initialised MPI it is adopted and never finalised by us. A process-wide
  // holder keeps it alive until exit; communicators hold it too, so it is
  // finalised after the last of them.
  static absl::StatusOr<std::shared_ptr<Runtime>> acquire();
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Every MPI call of the backend holds this: SERIALIZED is then enough, and
  // communicators made from one MPI share it.
  std::mutex& mu() { return mu_; }

 private:
  Runtime() = default;
  bool owned_ = false;  // we called MPI_Init_thread, so we finalise
  std::mutex mu_;
};

class Comm {
 public:
  Comm() = default;
  explicit Comm(MPI_Comm c) : c_(c) {}
  Comm(Comm&& o) noexcept : c_(std::exchange(o.c_, MPI_COMM_NULL)) {}
  Comm& operator=(Comm&& o) noexcept {
    std::swap(c_, o.c_);
    return *this;
  }
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;
  ~Comm();
  MPI_Comm get() const { return c_; }

 private:
  MPI_Comm c_ = MPI_COMM_NULL;
};

}  // namespace tandem::transport::mpi
