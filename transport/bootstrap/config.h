// Where a rank finds its peers: rank, world size, the rank-0 store's address
// and the cluster token, read from the environment the way torchrun sets it
// (TANDEM_RANK, TANDEM_WORLD_SIZE, TANDEM_MASTER_ADDR, TANDEM_MASTER_PORT), or
// rank and size from mpirun's (OMPI_COMM_WORLD_*, PMI_*).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"

namespace tandem::transport {

struct BootstrapConfig {
  int rank = 0;
  int world_size = 1;
  std::string master_addr = "127.0.0.1";
  // 0 on rank 0 binds an ephemeral port (tests read it back from the store).
  uint16_t master_port = 0;
  // Shared secret: no process without it can join the store or inject data.
  std::string token;
  // Bounds the whole rendezvous (connect, authenticate, every rank joined).
  std::chrono::milliseconds timeout{60000};
  // Rank 0: called once its store listens, with the bound port, before it
  // waits for the others (a launcher starts its local workers here). An error
  // ends the rendezvous.
  std::function<absl::Status(uint16_t port)> on_listening;
};

// Returns the variable's value or nullptr; std::getenv by default.
using EnvLookup = std::function<const char*(const char*)>;

// Reads, in order of precedence: rank from TANDEM_RANK, OMPI_COMM_WORLD_RANK or
// PMI_RANK; size likewise (TANDEM_WORLD_SIZE, OMPI_COMM_WORLD_SIZE, PMI_SIZE);
// TANDEM_MASTER_ADDR (default 127.0.0.1 only when world size is 1),
// TANDEM_MASTER_PORT, TANDEM_BOOTSTRAP_TIMEOUT_MS (default 60000), and the
// token from TANDEM_CLUSTER_TOKEN or the file named by TANDEM_CLUSTER_TOKEN_FILE
// (refused if other users may read it). Bad or missing values are
// INVALID_ARGUMENT naming the variable.
absl::StatusOr<BootstrapConfig> config_from_env(const EnvLookup& env);
absl::StatusOr<BootstrapConfig> config_from_env();

// Reads a token file: trailing whitespace is stripped; a file readable by
// other users is refused, a group-readable one is accepted with a warning.
absl::StatusOr<std::string> read_token_file(const std::string& path);

}  // namespace tandem::transport
