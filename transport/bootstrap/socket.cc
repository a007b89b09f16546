#include "transport/bootstrap/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tandem::transport {
namespace {

absl::Status errno_status(std::string_view what, int err) {
  return absl::UnavailableError(absl::StrCat(std::string(what), ": ", std::strerror(err)));
}

absl::StatusOr<sockaddr_storage> resolve(const std::string& addr, uint16_t port, socklen_t* len) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  int rc = ::getaddrinfo(addr.c_str(), service.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve '", addr, "': ", ::gai_strerror(rc)));
  }
  sockaddr_storage ss{};
  std::memcpy(&ss, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  ::freeaddrinfo(res);
  return ss;
}

absl::StatusOr<Fd> make_socket(int family) {
  Fd fd(::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return errno_status("socket", errno);
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

// Waits for `events` on fd until the deadline.
absl::Status wait_fd(int fd, short events, BootstrapDeadline deadline, std::string_view what) {
  for (;;) {
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, poll_timeout_ms(deadline));
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return errno_status("poll", errno);
    if (rc > 0) return absl::OkStatus();
    if (BootstrapClock::now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("deadline passed while ", std::string(what)));
    }
  }
}

}  // namespace

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    reset();
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}

void Fd::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

int poll_timeout_ms(BootstrapDeadline deadline) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - BootstrapClock::now());
  return static_cast<int>(std::clamp<int64_t>(left.count(), 0, 60000));
}

absl::StatusOr<Fd> tcp_listen(const std::string& addr, uint16_t port) {
  socklen_t len = 0;
  TANDEM_ASSIGN_OR_RETURN(sockaddr_storage ss, resolve(addr, port, &len));
  TANDEM_ASSIGN_OR_RETURN(Fd fd, make_socket(ss.ss_family));
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    return errno_status(absl::StrCat("bind ", addr, ":", port), errno);
  }
  if (::listen(fd.get(), 128) != 0) return errno_status("listen", errno);
  return fd;
}

absl::StatusOr<uint16_t> local_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return errno_status("getsockname", errno);
  }
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

std::string peer_name(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  if (::getnameinfo(reinterpret_cast<sockaddr*>(&ss), len, host, sizeof(host), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return "?";
  }
  return absl::StrCat(host, ":", serv);
}

absl::StatusOr<Fd> tcp_connect(const std::string& addr, uint16_t port, BootstrapDeadline deadline) {
  socklen_t len = 0;
  TANDEM_ASSIGN_OR_RETURN(sockaddr_storage ss, resolve(addr, port, &len));
  TANDEM_ASSIGN_OR_RETURN(Fd fd, make_socket(ss.ss_family));
  std::string where = absl::StrCat(addr, ":", port);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    if (errno != EINPROGRESS) return errno_status(absl::StrCat("connect ", where), errno);
    TANDEM_RETURN_IF_ERROR(wait_fd(fd.get(), POLLOUT, deadline, "connecting"));
    int err = 0;
    socklen_t el = sizeof(err);
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &el);
    if (err != 0) return errno_status(absl::StrCat("connect ", where), err);
  }
  return fd;
}

absl::Status write_all(int fd, std::string_view data, BootstrapDeadline deadline) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      TANDEM_RETURN_IF_ERROR(wait_fd(fd, POLLOUT, deadline, "sending"));
      continue;
    }
    return errno_status("send", errno);
  }
  return absl::OkStatus();
}

absl::Status read_exact(int fd, char* out, size_t n, BootstrapDeadline deadline) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::recv(fd, out + got, n - got, 0);
    if (r > 0) {
      got += static_cast<size_t>(r);
      continue;
    }
    if (r == 0) return absl::UnavailableError("the peer closed the connection");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      TANDEM_RETURN_IF_ERROR(wait_fd(fd, POLLIN, deadline, "receiving"));
      continue;
    }
    return errno_status("recv", errno);
  }
  return absl::OkStatus();
}

absl::Status Channel::send(wire::MsgType type, std::string_view payload,
                           BootstrapDeadline deadline) {
  TANDEM_CHECK(payload.size() <= wire::kMaxFramePayload);
  auto header = wire::encode_header(type, static_cast<uint32_t>(payload.size()));
  std::string frame(wire::as_view(header));
  frame.append(payload);
  if (!key_.empty()) {
    wire::Mac mac = wire::frame_mac(key_, send_dir_, send_seq_++, header, payload);
    frame.append(wire::as_view(mac));
  }
  return write_all(fd_.get(), frame, deadline);
}

absl::StatusOr<std::pair<wire::MsgType, std::string>> Channel::recv(uint32_t max_payload,
                                                                    BootstrapDeadline deadline) {
  std::array<uint8_t, wire::kHeaderBytes> header{};
  TANDEM_RETURN_IF_ERROR(
      read_exact(fd_.get(), reinterpret_cast<char*>(header.data()), header.size(), deadline));
  TANDEM_ASSIGN_OR_RETURN(wire::FrameHeader h, wire::parse_header(header, max_payload));
  std::string payload(h.length, '\0');
  TANDEM_RETURN_IF_ERROR(read_exact(fd_.get(), payload.data(), payload.size(), deadline));
  if (!key_.empty()) {
    wire::Mac mac{};
    TANDEM_RETURN_IF_ERROR(
        read_exact(fd_.get(), reinterpret_cast<char*>(mac.data()), mac.size(), deadline));
    wire::Mac want = wire::frame_mac(key_, send_dir_ ^ 1, recv_seq_++, header, payload);
    if (!wire::mac_equal(mac, want)) {
      return absl::UnauthenticatedError("a store frame failed its MAC check (injected data?)");
    }
  }
  return std::make_pair(h.type, std::move(payload));
}

}  // namespace tandem::transport
