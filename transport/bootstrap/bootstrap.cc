#include "transport/bootstrap/bootstrap.h"

#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tandem::transport {
namespace {

using wire::MsgType;

void log(const std::string& line) { std::fprintf(stderr, "tandem/bootstrap: %s\n", line.c_str()); }

uint32_t timeout_ms(BootstrapDeadline deadline) {
  auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - BootstrapClock::now());
  return static_cast<uint32_t>(std::clamp<int64_t>(left.count(), 0, 24LL * 3600 * 1000));
}

// How long the client waits past its deadline for the store's own timeout
// reply (which names the missing ranks) before it gives up on the store.
constexpr auto kReplyGrace = std::chrono::seconds(2);

}  // namespace

absl::StatusOr<std::unique_ptr<Bootstrap>> Bootstrap::create(const BootstrapConfig& config) {
  if (config.world_size < 1 || config.rank < 0 || config.rank >= config.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", config.rank, " is not in a world of ", config.world_size));
  }
  if (config.token.empty()) return absl::InvalidArgumentError("the cluster token is empty");
  BootstrapDeadline deadline = BootstrapClock::now() + config.timeout;
  std::unique_ptr<Bootstrap> b(new Bootstrap());
  b->config_ = config;
  b->port_ = config.master_port;
  if (config.rank == 0) {
    TANDEM_ASSIGN_OR_RETURN(b->server_, StoreServer::start(config.master_addr, config.master_port,
                                                           config.world_size, config.token));
    b->port_ = b->server_->port();
    if (config.on_listening) TANDEM_RETURN_IF_ERROR(config.on_listening(b->port_));
  } else if (config.master_port == 0) {
    return absl::InvalidArgumentError("TANDEM_MASTER_PORT=0 is only valid on rank 0");
  }
  TANDEM_RETURN_IF_ERROR(b->connect(deadline));
  absl::Status joined = b->wait_named("tandem/join", deadline);
  if (!joined.ok()) {
    return absl::Status(joined.code(), absl::StrCat("rendezvous at ", config.master_addr, ":",
                                                    b->port_, " failed: ", joined.message()));
  }
  return b;
}

Bootstrap::~Bootstrap() = default;

absl::Status Bootstrap::connect(BootstrapDeadline deadline) {
  bool told = false;
  for (auto backoff = std::chrono::milliseconds(100);;
       backoff = std::min(backoff * 2, std::chrono::milliseconds(1000))) {
    bool retry_later = false;
    absl::Status s = connect_once(deadline, &retry_later);
    if (!retry_later) return s;
    channel_.reset();
    if (!told) {
      log(absl::StrCat("rank ", config_.rank, ": ", s.message(), "; waiting for it"));
      told = true;
    }
    if (BootstrapClock::now() + backoff >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "rank ", config_.rank, " found no new cluster to rejoin in time: ", s.message()));
    }
    std::this_thread::sleep_for(backoff);
  }
}

absl::Status Bootstrap::connect_once(BootstrapDeadline deadline, bool* retry_later) {
  std::string where = absl::StrCat(config_.master_addr, ":", port_);
  // Rank 0 may not be listening yet: retry refused connections until the deadline.
  absl::StatusOr<Fd> fd = absl::UnavailableError("not tried");
  for (auto backoff = std::chrono::milliseconds(20);;
       backoff = std::min(backoff * 2, std::chrono::milliseconds(500))) {
    fd = tcp_connect(config_.master_addr, port_, deadline);
    if (fd.ok() || fd.status().code() != absl::StatusCode::kUnavailable) break;
    if (BootstrapClock::now() + backoff >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("rank ", config_.rank,
                                                      " could not reach the store at ", where,
                                                      " in time: ", fd.status().message()));
    }
    std::this_thread::sleep_for(backoff);
  }
  if (!fd.ok()) return fd.status();
  channel_ = std::make_unique<Channel>(std::move(*fd));

  TANDEM_ASSIGN_OR_RETURN(auto hello, channel_->recv(4 + wire::kNonceBytes, deadline));
  if (hello.first != MsgType::kHello) return absl::UnavailableError("the store did not say hello");
  wire::Reader rd(hello.second);
  TANDEM_ASSIGN_OR_RETURN(uint32_t version, rd.u32());
  TANDEM_ASSIGN_OR_RETURN(std::string_view server_nonce_bytes, rd.raw(wire::kNonceBytes));
  if (version != wire::kProtocolVersion) {
    return absl::FailedPreconditionError(absl::StrCat("the store at ", where, " speaks protocol ",
                                                      version, ", we speak ",
                                                      wire::kProtocolVersion));
  }
  wire::Nonce server_nonce{};
  std::copy(server_nonce_bytes.begin(), server_nonce_bytes.end(), server_nonce.begin());
  TANDEM_ASSIGN_OR_RETURN(wire::Nonce client_nonce, wire::random_nonce());
  auto rank = static_cast<uint32_t>(config_.rank);
  auto world = static_cast<uint32_t>(config_.world_size);
  wire::Mac proof = wire::client_proof(config_.token, server_nonce, client_nonce, rank, world);
  TANDEM_RETURN_IF_ERROR(channel_->send(
      MsgType::kAuth, wire::Writer().raw(client_nonce).u32(rank).u32(world).raw(proof).data(),
      deadline));
  TANDEM_ASSIGN_OR_RETURN(auto reply, channel_->recv(1024, deadline));
  if (reply.first == MsgType::kRetryLater) {
    *retry_later = true;
    return absl::UnavailableError(absl::StrCat("the store at ", where, " says: ", reply.second));
  }
  if (reply.first == MsgType::kAuthFail) {
    log(absl::StrCat("rank ", config_.rank, ": the store at ", where,
                     " refused us: ", reply.second));
    return absl::PermissionDeniedError(
        absl::StrCat("the store at ", where, " refused rank ", config_.rank, ": ", reply.second));
  }
  wire::Mac want = wire::server_proof(config_.token, server_nonce, client_nonce);
  if (reply.first != MsgType::kAuthOk ||
      !wire::mac_equal({reinterpret_cast<const uint8_t*>(reply.second.data()), reply.second.size()},
                       want)) {
    log(absl::StrCat("rank ", config_.rank, ": the store at ", where,
                     " does not hold our cluster token; disconnecting"));
    return absl::UnauthenticatedError(
        absl::StrCat("the store at ", where, " could not prove it holds the cluster token"));
  }
  channel_->set_session(wire::session_key(config_.token, server_nonce, client_nonce), 0);
  return absl::OkStatus();
}

absl::StatusOr<std::pair<MsgType, std::string>> Bootstrap::call(MsgType type,
                                                                std::string_view payload,
                                                                BootstrapDeadline deadline) {
  if (channel_ == nullptr) return absl::UnavailableError("the store connection is closed");
  absl::Status s = channel_->send(type, payload, deadline + kReplyGrace);
  absl::StatusOr<std::pair<MsgType, std::string>> reply =
      s.ok() ? channel_->recv(wire::kMaxFramePayload + 4, deadline + kReplyGrace) : s;
  if (!reply.ok()) {
    // The stream may hold a half-read frame: it cannot be reused.
    channel_.reset();
    if (reply.status().code() == absl::StatusCode::kUnavailable) {
      return absl::UnavailableError(
          absl::StrCat("lost the bootstrap store (rank 0 gone?): ", reply.status().message()));
    }
    return reply.status();
  }
  if (reply->first == MsgType::kTimeout) return absl::DeadlineExceededError(reply->second);
  if (reply->first == MsgType::kError) return absl::ResourceExhaustedError(reply->second);
  return reply;
}

absl::Status Bootstrap::set(std::string_view key, std::string_view value,
                            BootstrapDeadline deadline) {
  if (key.size() > wire::kMaxKeyBytes || value.size() > wire::kMaxFramePayload - 512) {
    return absl::InvalidArgumentError("bootstrap key or value too long");
  }
  std::lock_guard<std::mutex> lock(mu_);
  TANDEM_ASSIGN_OR_RETURN(
      auto reply, call(MsgType::kSet, wire::Writer().bytes(key).bytes(value).data(), deadline));
  if (reply.first != MsgType::kOk) return absl::InternalError("unexpected reply to set");
  return absl::OkStatus();
}

absl::StatusOr<std::string> Bootstrap::get(std::string_view key, BootstrapDeadline deadline) {
  if (key.size() > wire::kMaxKeyBytes) return absl::InvalidArgumentError("bootstrap key too long");
  std::lock_guard<std::mutex> lock(mu_);
  TANDEM_ASSIGN_OR_RETURN(
      auto reply,
      call(MsgType::kGet, wire::Writer().bytes(key).u32(timeout_ms(deadline)).data(), deadline));
  if (reply.first != MsgType::kValue) return absl::InternalError("unexpected reply to get");
  wire::Reader rd(reply.second);
  TANDEM_ASSIGN_OR_RETURN(std::string_view value, rd.bytes(wire::kMaxFramePayload));
  TANDEM_RETURN_IF_ERROR(rd.done());
  return std::string(value);
}

absl::Status Bootstrap::wait_named(std::string_view name, BootstrapDeadline deadline) {
  std::lock_guard<std::mutex> lock(mu_);
  TANDEM_ASSIGN_OR_RETURN(
      auto reply, call(MsgType::kBarrier,
                       wire::Writer().bytes(name).u32(timeout_ms(deadline)).data(), deadline));
  if (reply.first != MsgType::kOk) return absl::InternalError("unexpected reply to barrier");
  return absl::OkStatus();
}

absl::Status Bootstrap::barrier(BootstrapDeadline deadline) {
  return wait_named(absl::StrCat("tandem/barrier/", n_barriers_++), deadline);
}

absl::StatusOr<std::vector<std::string>> Bootstrap::all_gather(std::string_view name,
                                                               std::string_view value,
                                                               BootstrapDeadline deadline) {
  TANDEM_RETURN_IF_ERROR(set(absl::StrCat(std::string(name), "/", config_.rank), value, deadline));
  // The barrier names missing ranks; after it every value is present.
  TANDEM_RETURN_IF_ERROR(wait_named(absl::StrCat(std::string(name), "/gathered"), deadline));
  std::vector<std::string> out(config_.world_size);
  for (int r = 0; r < config_.world_size; ++r) {
    TANDEM_ASSIGN_OR_RETURN(out[r], get(absl::StrCat(std::string(name), "/", r), deadline));
  }
  return out;
}

}  // namespace tandem::transport
