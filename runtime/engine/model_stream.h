// Streaming a model to ranks that have no copy of its file. Rank 0 serves
// byte ranges of its file over the cluster's communicator; a rank whose model
// path is missing opens a remote gguf::File that fetches the header and then
// the bytes of its own shard, and only those, from rank 0. Every exchange has
// the caller's deadline; a lost peer is an error on both sides, not a hang.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/gguf/gguf.h"
#include "transport/communicator.h"

namespace tandem::engine {

// Rank 0's side: answers the requests of `fetchers` from `file` on a thread of
// its own, while rank 0 loads its own shard. With a null `file` (rank 0 could
// not open it), every request is refused with `file_error`, so that no
// fetcher waits for its deadline. `file` must outlive the server.
class ModelStreamServer {
 public:
  static absl::StatusOr<std::unique_ptr<ModelStreamServer>> Start(
      transport::Communicator& comm, const gguf::File* file, absl::Status file_error,
      std::vector<int> fetchers, transport::Deadline deadline);
  // Stops serving (cancels what is pending) if finish() did not return OK.
  ~ModelStreamServer();
  ModelStreamServer(const ModelStreamServer&) = delete;
  ModelStreamServer& operator=(const ModelStreamServer&) = delete;

  // Waits until every fetcher said it is done: OK, or the first failure (a
  // lost fetcher, a read error, the deadline).
  absl::Status finish(transport::Deadline deadline);
  uint64_t bytes_sent() const;

  struct State;  // model_stream.cc

 private:
  explicit ModelStreamServer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// A fetching rank's side: the model file on rank 0, as a File whose tensor
// reads go to rank 0. `name` is the path rank 0 was given (for messages).
// The communicator must outlive the File.
absl::StatusOr<gguf::File> open_streamed_model(transport::Communicator& comm,
                                               const std::string& name,
                                               transport::Deadline deadline);
// Tells rank 0 that this rank needs nothing more; every fetching rank calls
// it once, whether its load succeeded or not.
absl::Status finish_streamed_model(transport::Communicator& comm, transport::Deadline deadline);

}  // namespace tandem::engine
