// Non-blocking TCP sockets where every wait has a deadline (poll), and a
// framed, authenticated channel over one of them: the client side of the
// bootstrap store.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"
#include "transport/bootstrap/wire.h"

namespace tandem::transport {

using BootstrapClock = std::chrono::steady_clock;
using BootstrapDeadline = BootstrapClock::time_point;

// Owns a file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void reset();

 private:
  int fd_ = -1;
};

// Milliseconds until `deadline` for poll(), at least 0, at most a minute.
int poll_timeout_ms(BootstrapDeadline deadline);

// A non-blocking listening socket on addr:port (port 0: ephemeral).
absl::StatusOr<Fd> tcp_listen(const std::string& addr, uint16_t port);
absl::StatusOr<uint16_t> local_port(int fd);
std::string peer_name(int fd);

// One connection attempt, non-blocking, bounded by `deadline`. UNAVAILABLE
// when refused (the caller may retry), DEADLINE_EXCEEDED when out of time.
absl::StatusOr<Fd> tcp_connect(const std::string& addr, uint16_t port, BootstrapDeadline deadline);

absl::Status write_all(int fd, std::string_view data, BootstrapDeadline deadline);
absl::Status read_exact(int fd, char* out, size_t n, BootstrapDeadline deadline);

// A framed channel; after authenticate() every frame carries a MAC.
class Channel {
 public:
  explicit Channel(Fd fd) : fd_(std::move(fd)) {}
  void set_session(std::string key, uint8_t send_direction) {
    key_ = std::move(key);
    send_dir_ = send_direction;
  }
  absl::Status send(wire::MsgType type, std::string_view payload, BootstrapDeadline deadline);
  // Receives one frame of at most max_payload bytes; a bad MAC is
  // UNAUTHENTICATED, a closed socket UNAVAILABLE.
  absl::StatusOr<std::pair<wire::MsgType, std::string>> recv(uint32_t max_payload,
                                                             BootstrapDeadline deadline);
  int fd() const { return fd_.get(); }

 private:
  Fd fd_;
  std::string key_;  // empty until the handshake is done
  uint8_t send_dir_ = 0;
  uint64_t send_seq_ = 0;
  uint64_t recv_seq_ = 0;
};

}  // namespace tandem::transport
