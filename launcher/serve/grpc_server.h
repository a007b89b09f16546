// The gRPC front of `tandem serve`: InferenceService and ClusterService as
// thin adapters over a ServeBackend, the standard grpc.health.v1 service,
// server reflection, bearer-token auth and TLS/mTLS. The only serving file
// that includes grpcpp, which is slow to compile.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "launcher/serve/security.h"
#include "launcher/serve/serve_backend.h"

namespace tandem::launcher::serve {

struct ApiServerOptions {
  SecurityFlags security;  // --listen, --auth-token-file, --tls-*
};

class ApiServer {
 public:
  // Checks the security flags, reads the token and certificates, and starts
  // listening with health NOT_SERVING. `backend` must outlive the server.
  static absl::StatusOr<std::unique_ptr<ApiServer>> start(const ApiServerOptions& options,
                                                          ServeBackend& backend);
  virtual ~ApiServer() = default;
  // The port actually bound (useful with --listen HOST:0).
  virtual int port() const = 0;
  // grpc.health.v1 for "" and both services.
  virtual void set_serving(bool serving) = 0;
  // Stops accepting calls; calls still running get until `deadline`, then are cancelled.
  virtual void shutdown(std::chrono::system_clock::time_point deadline) = 0;
};

}  // namespace tandem::launcher::serve
