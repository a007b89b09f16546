#include "transport/mpi/mpi_handles.h"

#include <cstdio>

#include "absl/strings/str_cat.h"

namespace tandem::transport::mpi {

absl::Status mpi_error(const std::string& what, int code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) len = 0;
  return absl::UnavailableError(
      absl::StrCat(what, " failed: ", std::string(text, static_cast<size_t>(len))));
}

absl::StatusOr<std::shared_ptr<Runtime>> Runtime::acquire() {
  static std::mutex init_mu;
  // Destroyed at exit: the runtime is finalised then, or later when the last
  // communicator (say one held in a static) lets go of it.
  static std::shared_ptr<Runtime> instance;
  std::lock_guard<std::mutex> lock(init_mu);
  if (instance != nullptr) return instance;

  int finalized = 0, initialized = 0;
  MPI_Finalized(&finalized);
  if (finalized) {
    return absl::FailedPreconditionError("MPI was already finalised in this process");
  }
  MPI_Initialized(&initialized);
  auto runtime = std::shared_ptr<Runtime>(new Runtime());
  int provided = MPI_THREAD_SINGLE;
  if (initialized) {
    MPI_Query_thread(&provided);
  } else {
    int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
    if (rc != MPI_SUCCESS) return mpi_error("MPI_Init_thread", rc);
    runtime->owned_ = true;
    // Errors in the few calls on the world communicator (dup, attributes)
    // come back as codes too, instead of MPI's default abort.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  if (provided < MPI_THREAD_SERIALIZED) {
    return absl::FailedPreconditionError(
        absl::StrCat("MPI provides thread level ", provided,
                     "; the MPI transport needs MPI_THREAD_SERIALIZED or better"));
  }
  instance = runtime;
  return runtime;
}

Runtime::~Runtime() {
  if (!owned_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

Comm::~Comm() {
  if (c_ == MPI_COMM_NULL) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Comm_free(&c_);
}

}  // namespace tandem::transport::mpi
