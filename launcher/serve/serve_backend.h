// What the gRPC services call: the serving node behind a plain interface, so
// that the services stay thin adapters (grpc_server.cc) and the node's logic
// needs no server to test.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "runtime/engine/scheduler.h"
#include "tandem/v1/cluster.pb.h"
#include "tandem/v1/inference.pb.h"

namespace tandem::launcher::serve {

class ServeBackend {
 public:
  virtual ~ServeBackend() = default;

  // Validates and queues a generation; `seed` receives the sampler's seed.
  // UNAVAILABLE while loading, draining or failed; INVALID_ARGUMENT naming
  // the field; RESOURCE_EXHAUSTED when every slot is busy.
  virtual absl::StatusOr<std::shared_ptr<engine::RequestStream>> generate(
      const v1::GenerateRequest& request, engine::SchedulerClock::time_point deadline,
      uint64_t* seed) = 0;
  virtual absl::StatusOr<v1::TokenizeResponse> tokenize(const v1::TokenizeRequest& request) = 0;
  virtual absl::StatusOr<v1::ModelInfo> model_info() = 0;
  virtual v1::ClusterStatus status() = 0;
  // Stops taking requests and waits for those in flight until `until`.
  virtual v1::DrainResponse drain(engine::SchedulerClock::time_point until) = 0;
  // Asks the node to drain (at most `drain_timeout_seconds`, 0: its default)
  // and stop; returns at once.
  virtual void request_shutdown(double drain_timeout_seconds) = 0;
};

}  // namespace tandem::launcher::serve
