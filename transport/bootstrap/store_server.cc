#include "transport/bootstrap/store_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <map>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace tandem::transport {
namespace {

using wire::MsgType;

constexpr auto kHandshakeTimeout = std::chrono::seconds(10);
constexpr auto kMaxWait = std::chrono::hours(24);
constexpr size_t kMaxStoreBytes = 256u << 20;  // all values together
// kAuth: client nonce, rank, world, mac.
constexpr uint32_t kAuthPayload = wire::kNonceBytes + 4 + 4 + wire::kMacBytes;

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

void log(const std::string& line) { std::fprintf(stderr, "tandem/bootstrap: %s\n", line.c_str()); }

}  // namespace

struct StoreServer::State {
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

  void queue(Conn& c, MsgType type, std::string_view payload) {
    auto header = wire::encode_header(type, static_cast<uint32_t>(payload.size()));
    c.out.append(wire::as_view(header));
    c.out.append(payload);
    if (c.authed)
      c.out.append(wire::as_view(wire::frame_mac(c.key, 1, c.send_seq++, header, payload)));
  }

  std::string missing(const std::set<int>& arrived) const {
    std::vector<int> m;
    for (int r = 0; r < world_size; ++r) {
      if (!arrived.count(r)) m.push_back(r);
    }
    return absl::StrJoin(m, ", ");
  }

  absl::Status handle_auth(Conn& c, std::string_view payload) {
    wire::Reader rd(payload);
    TANDEM_ASSIGN_OR_RETURN(std::string_view nonce, rd.raw(wire::kNonceBytes));
    TANDEM_ASSIGN_OR_RETURN(uint32_t rank, rd.u32());
    TANDEM_ASSIGN_OR_RETURN(uint32_t world, rd.u32());
    TANDEM_ASSIGN_OR_RETURN(std::string_view mac, rd.raw(wire::kMacBytes));
    TANDEM_RETURN_IF_ERROR(rd.done());
    wire::Nonce client{};
    std::copy(nonce.begin(), nonce.end(), client.begin());
    wire::Mac want = wire::client_proof(token, c.server_nonce, client, rank, world);
    auto refuse = [&](const std::string& why) {
      log(absl::StrCat("refused a connection from ", c.peer, " (claiming rank ", rank, "): ", why));
      queue(c, MsgType::kAuthFail, why);
      c.closing = true;
      return absl::OkStatus();
    };
    if (!wire::mac_equal({reinterpret_cast<const uint8_t*>(mac.data()), mac.size()}, want)) {
      return refuse("wrong cluster token");
    }
    if (static_cast<int>(world) != world_size) {
      return refuse(absl::StrCat("world size ", world, " does not match the store's ", world_size));
    }
    if (static_cast<int>(rank) >= world_size) return refuse(absl::StrCat("rank out of range"));
    if (connected_ranks.count(static_cast<int>(rank))) {
      return refuse(absl::StrCat("rank ", rank, " is already connected"));
    }
    wire::Mac proof = wire::server_proof(token, c.server_nonce, client);
    queue(c, MsgType::kAuthOk, wire::as_view(proof));
    c.authed = true;
    c.key = wire::session_key(token, c.server_nonce, client);
    c.rank = static_cast<int>(rank);
    connected_ranks.insert(c.rank);
    return absl::OkStatus();
  }

  void complete_waiters(const std::string& key, bool barrier) {
    std::erase_if(waiters, [&](const Waiter& w) {
      if (w.barrier != barrier || w.key != key) return false;
      auto it = conns.find(w.conn);
      if (it == conns.end()) return true;
      if (barrier) {
        queue(it->second, MsgType::kOk, "");
      } else {
        queue(it->second, MsgType::kValue, wire::Writer().bytes(kv[key]).data());
      }
      return true;
    });
  }

  absl::Status handle_request(uint64_t id, Conn& c, MsgType type, std::string_view payload) {
    wire::Reader rd(payload);
    switch (type) {
      case MsgType::kSet: {
        TANDEM_ASSIGN_OR_RETURN(std::string_view key, rd.bytes(wire::kMaxKeyBytes));
        TANDEM_ASSIGN_OR_RETURN(std::string_view value, rd.bytes(wire::kMaxFramePayload));
        TANDEM_RETURN_IF_ERROR(rd.done());
        std::string k(key);
        size_t old = kv.count(k) ? kv[k].size() : 0;
        if (kv_bytes - old + value.size() > kMaxStoreBytes) {
          queue(c, MsgType::kError, "the store is full");
          return absl::OkStatus();
        }
        kv_bytes = kv_bytes - old + value.size();
        kv[k] = std::string(value);
        queue(c, MsgType::kOk, "");
        complete_waiters(k, false);
        return absl::OkStatus();
      }
      case MsgType::kGet:
      case MsgType::kBarrier: {
        bool barrier = type == MsgType::kBarrier;
        TANDEM_ASSIGN_OR_RETURN(std::string_view key, rd.bytes(wire::kMaxKeyBytes));
        TANDEM_ASSIGN_OR_RETURN(uint32_t timeout_ms, rd.u32());
        TANDEM_RETURN_IF_ERROR(rd.done());
        std::string k(key);
        auto deadline =
            BootstrapClock::now() +
            std::min<std::chrono::milliseconds>(std::chrono::milliseconds(timeout_ms), kMaxWait);
        if (barrier) {
          if (failed_barriers.count(k)) {
            queue(c, MsgType::kTimeout, failed_barriers[k]);
            return absl::OkStatus();
          }
          std::set<int>& arrived = barriers[k];
          arrived.insert(c.rank);
          waiters.push_back({id, true, k, deadline});
          if (static_cast<int>(arrived.size()) == world_size) complete_waiters(k, true);
        } else if (kv.count(k)) {
          queue(c, MsgType::kValue, wire::Writer().bytes(kv[k]).data());
        } else {
          waiters.push_back({id, false, k, deadline});
        }
        return absl::OkStatus();
      }
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("unexpected frame type ", static_cast<int>(type)));
    }
  }

  // Parses and handles every complete frame in c.in.
  absl::Status drain_input(uint64_t id, Conn& c) {
    for (;;) {
      if (c.closing) {
        c.in.clear();
        return absl::OkStatus();
      }
      if (c.in.size() < wire::kHeaderBytes) return absl::OkStatus();
      std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(c.in.data()), c.in.size());
      TANDEM_ASSIGN_OR_RETURN(
          wire::FrameHeader h,
          wire::parse_header(bytes, c.authed ? wire::kMaxFramePayload : kAuthPayload));
      size_t need = wire::kHeaderBytes + h.length + (c.authed ? wire::kMacBytes : 0);
      if (c.in.size() < need) return absl::OkStatus();
      std::string_view payload(c.in.data() + wire::kHeaderBytes, h.length);
      if (!c.authed) {
        if (h.type != MsgType::kAuth) return absl::InvalidArgumentError("expected kAuth first");
        TANDEM_RETURN_IF_ERROR(handle_auth(c, payload));
      } else {
        wire::Mac want =
            wire::frame_mac(c.key, 0, c.recv_seq++, bytes.subspan(0, wire::kHeaderBytes), payload);
        if (!wire::mac_equal(bytes.subspan(wire::kHeaderBytes + h.length, wire::kMacBytes), want)) {
          return absl::UnauthenticatedError("frame MAC check failed (injected data?)");
        }
        TANDEM_RETURN_IF_ERROR(handle_request(id, c, h.type, payload));
      }
      c.in.erase(0, need);
    }
  }
};

absl::StatusOr<std::unique_ptr<StoreServer>> StoreServer::start(const std::string& addr,
                                                                uint16_t port, int world_size,
                                                                std::string token) {
  std::unique_ptr<StoreServer> s(new StoreServer());
  TANDEM_ASSIGN_OR_RETURN(s->listen_fd_, tcp_listen(addr, port));
  TANDEM_ASSIGN_OR_RETURN(s->port_, local_port(s->listen_fd_.get()));
  int p[2];
  if (::pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
  s->wake_read_ = Fd(p[0]);
  s->wake_write_ = Fd(p[1]);
  s->state_ = std::make_unique<State>();
  s->state_->world_size = world_size;
  s->state_->token = std::move(token);
  s->thread_ = std::thread([srv = s.get()] { srv->run(); });
  return s;
}

StoreServer::~StoreServer() {
  if (thread_.joinable()) {
    state_->stop = true;
    char b = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_write_.get(), &b, 1);
    thread_.join();
  }
}

void StoreServer::run() {
  State& st = *state_;
  std::vector<pollfd> fds;
  std::vector<uint64_t> ids;
  char buf[64 * 1024];
  while (!st.stop) {
    auto now = BootstrapClock::now();
    BootstrapDeadline next = now + std::chrono::seconds(1);
    for (const Waiter& w : st.waiters) next = std::min(next, w.deadline);
    for (auto& [id, c] : st.conns) {
      if (!c.authed) next = std::min(next, c.handshake_deadline);
    }
    fds.assign({{wake_read_.get(), POLLIN, 0}, {listen_fd_.get(), POLLIN, 0}});
    ids.assign({0, 0});
    for (auto& [id, c] : st.conns) {
      fds.push_back({c.fd.get(), static_cast<short>(POLLIN | (c.out.empty() ? 0 : POLLOUT)), 0});
      ids.push_back(id);
    }
    int rc = ::poll(fds.data(), fds.size(), poll_timeout_ms(next));
    if (rc < 0 && errno != EINTR) {
      log(absl::StrCat("poll failed: ", std::strerror(errno)));
      return;
    }
    if (st.stop) break;
    // New connections: each gets a fresh challenge.
    if (rc > 0 && (fds[1].revents & POLLIN)) {
      for (;;) {
        Fd fd(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd.valid()) break;
        auto nonce = wire::random_nonce();
        if (!nonce.ok()) continue;
        Conn c;
        c.peer = peer_name(fd.get());
        c.fd = std::move(fd);
        c.server_nonce = *nonce;
        c.handshake_deadline = BootstrapClock::now() + kHandshakeTimeout;
        st.queue(c, MsgType::kHello,
                 wire::Writer().u32(wire::kProtocolVersion).raw(c.server_nonce).data());
        st.conns.emplace(st.next_id++, std::move(c));
      }
    }
    for (size_t i = 2; rc > 0 && i < fds.size(); ++i) {
      auto it = st.conns.find(ids[i]);
      if (it == st.conns.end()) continue;
      Conn& c = it->second;
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        for (;;) {
          ssize_t n = ::recv(c.fd.get(), buf, sizeof(buf), 0);
          if (n > 0) {
            c.in.append(buf, static_cast<size_t>(n));
            // Bound what an unauthenticated peer can make us buffer.
            if (c.in.size() > wire::kHeaderBytes + wire::kMaxFramePayload + wire::kMacBytes) {
              break;
            }
            continue;
          }
          if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) c.dead = true;
          if (n < 0 && errno == EINTR) continue;
          break;
        }
        absl::Status s = st.drain_input(it->first, c);
        if (!s.ok()) {
          log(absl::StrCat("dropping the connection from ", c.peer,
                           c.rank >= 0 ? absl::StrCat(" (rank ", c.rank, ")") : "", ": ",
                           s.message()));
          c.dead = true;
        }
      }
      if (!c.dead && !c.out.empty()) {
        ssize_t n = ::send(c.fd.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL);
        if (n > 0) c.out.erase(0, static_cast<size_t>(n));
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) c.dead = true;
      }
    }
    // Expired waits answer kTimeout; a barrier names who is missing. A
    // barrier that timed out for one rank fails for all its waiters at once
    // (and for late arrivals): otherwise rank 0 could leave, closing the
    // store, before a later-started rank heard which ranks were missing.
    now = BootstrapClock::now();
    for (const Waiter& w : st.waiters) {
      if (w.barrier && w.deadline <= now && !st.failed_barriers.count(w.key)) {
        st.failed_barriers[w.key] =
            absl::StrCat("rank(s) ", st.missing(st.barriers[w.key]), " of ", st.world_size,
                         " did not reach '", w.key, "' in time");
      }
    }
    std::erase_if(st.waiters, [&](const Waiter& w) {
      if (w.barrier && st.failed_barriers.count(w.key)) {
        auto it = st.conns.find(w.conn);
        if (it != st.conns.end())
          st.queue(it->second, MsgType::kTimeout, st.failed_barriers[w.key]);
        return true;
      }
      if (w.deadline > now) return false;
      auto it = st.conns.find(w.conn);
      if (it == st.conns.end()) return true;
      std::string msg = w.barrier
                            ? absl::StrCat("rank(s) ", st.missing(st.barriers[w.key]), " of ",
                                           st.world_size, " did not reach '", w.key, "' in time")
                            : absl::StrCat("key '", w.key, "' was not set in time");
      st.queue(it->second, MsgType::kTimeout, msg);
      return true;
    });
    for (auto it = st.conns.begin(); it != st.conns.end();) {
      Conn& c = it->second;
      if (!c.authed && !c.closing && c.handshake_deadline <= now) {
        log(absl::StrCat("dropping ", c.peer, ": no handshake within ", kHandshakeTimeout.count(),
                         " s"));
        c.dead = true;
      }
      if (c.dead || (c.closing && c.out.empty())) {
        if (c.rank >= 0) st.connected_ranks.erase(c.rank);
        uint64_t id = it->first;
        std::erase_if(st.waiters, [&](const Waiter& w) { return w.conn == id; });
        it = st.conns.erase(it);
      } else {
        ++it;
      }
    }
  }
  // Best effort: hand out replies already decided (a rank may be waiting on
  // its timeout message while rank 0 leaves).
  for (auto& [id, c] : st.conns) {
    if (!c.dead && !c.out.empty()) {
      [[maybe_unused]] ssize_t n = ::send(c.fd.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL);
    }
  }
}

}  // namespace tandem::transport
