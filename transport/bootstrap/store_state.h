// The bootstrap store's protocol, apart from its sockets: each connection's
// buffered bytes, the handshake, the key-value map, waiters and barriers.
// StoreServer (store_server.cc) feeds it what it reads and sends what it
// queues; the fuzz target tests/fuzz/bootstrap_fuzz.cc feeds it arbitrary
// bytes. Everything in Conn::in comes from an untrusted peer.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "transport/bootstrap/socket.h"
#include "transport/bootstrap/wire.h"

namespace tandem::transport::store {

inline constexpr auto kMaxWait = std::chrono::hours(24);
inline constexpr size_t kMaxStoreBytes = 256u << 20;  // all values together
// kAuth: client nonce, rank, world, mac.
inline constexpr uint32_t kAuthPayload = wire::kNonceBytes + 4 + 4 + wire::kMacBytes;

struct Conn {
  Fd fd;
  std::string peer;
  wire::Nonce server_nonce{};
  bool authed = false;
  std::string key;  // session key once authed
  uint64_t recv_seq = 0, send_seq = 0;
  int rank = -1;
  std::string in, out;
  BootstrapDeadline handshake_deadline;
  bool closing = false;  // close once `out` is flushed
  bool dead = false;     // close now
};

struct Waiter {
  uint64_t conn;
  bool barrier;
  std::string key;
  BootstrapDeadline deadline;
};

void log(const std::string& line);

struct State {
  int world_size = 0;
  std::string token;
  std::atomic<bool> stop{false};
  uint64_t next_id = 1;
  std::map<uint64_t, Conn> conns;
  std::vector<Waiter> waiters;
  std::map<std::string, std::string> kv;
  size_t kv_bytes = 0;
  std::map<std::string, std::set<int>> barriers;
  std::map<std::string, std::string> failed_barriers;  // name -> timeout message
  std::set<int> connected_ranks;
  std::set<int> joined_ranks;  // every rank that ever authenticated

  // Appends a frame (MACed once the connection is authenticated) to c.out.
  void queue(Conn& c, wire::MsgType type, std::string_view payload);
  // The ranks of [0, world_size) not in `arrived`, as "1, 3".
  std::string missing(const std::set<int>& arrived) const;
  absl::Status handle_auth(Conn& c, std::string_view payload);
  void complete_waiters(const std::string& key, bool barrier);
  absl::Status handle_request(uint64_t id, Conn& c, wire::MsgType type, std::string_view payload);
  // Parses and handles every complete frame in c.in; an error means the
  // connection must be dropped.
  absl::Status drain_input(uint64_t id, Conn& c);
};

}  // namespace tandem::transport::store
