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
#include "transport/bootstrap/store_state.h"

namespace tandem::transport {
namespace {

using store::Conn;
using store::log;
using store::Waiter;
using wire::MsgType;

constexpr auto kHandshakeTimeout = std::chrono::seconds(10);

}  // namespace

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
  s->state_ = std::make_unique<store::State>();
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
  store::State& st = *state_;
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
