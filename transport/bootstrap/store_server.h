// The rank-0 side of the bootstrap store: a key-value store with blocking
// get and named barriers, served on one background thread with poll() over
// non-blocking sockets. Every connection must first prove it holds the
// cluster token (HMAC challenge-response); afterwards every frame is MACed,
// so a process without the token can neither join nor inject data.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "transport/bootstrap/socket.h"

namespace tandem::transport {

namespace store {
struct State;
}  // namespace store

class StoreServer {
 public:
  // Binds addr:port (0: ephemeral) and starts serving.
  static absl::StatusOr<std::unique_ptr<StoreServer>> start(const std::string& addr, uint16_t port,
                                                            int world_size, std::string token);
  ~StoreServer();  // stops the thread and closes every connection
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;

  uint16_t port() const { return port_; }

 private:
  StoreServer() = default;
  void run();

  uint16_t port_ = 0;
  Fd listen_fd_;
  Fd wake_read_, wake_write_;
  std::unique_ptr<store::State> state_;
  std::thread thread_;
};

}  // namespace tandem::transport
