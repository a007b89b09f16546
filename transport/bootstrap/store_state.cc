#include "transport/bootstrap/store_state.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace tandem::transport::store {

using wire::MsgType;

void log(const std::string& line) { std::fprintf(stderr, "tandem/bootstrap: %s\n", line.c_str()); }

void State::queue(Conn& c, MsgType type, std::string_view payload) {
  auto header = wire::encode_header(type, static_cast<uint32_t>(payload.size()));
  c.out.append(wire::as_view(header));
  c.out.append(payload);
  if (c.authed)
    c.out.append(wire::as_view(wire::frame_mac(c.key, 1, c.send_seq++, header, payload)));
}

std::string State::missing(const std::set<int>& arrived) const {
  std::vector<int> m;
  for (int r = 0; r < world_size; ++r) {
    if (!arrived.count(r)) m.push_back(r);
  }
  return absl::StrJoin(m, ", ");
}

absl::Status State::handle_auth(Conn& c, std::string_view payload) {
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
  if (joined_ranks.count(static_cast<int>(rank))) {
    // A restarted rank: this cluster lost it and will not take it back. Rank
    // 0 starts a new one once it notices; the rank waits for that.
    log(absl::StrCat("rank ", rank, " (", c.peer, ") rejoins a cluster it left: told to wait"));
    queue(c, MsgType::kRetryLater,
          absl::StrCat("rank ", rank, " left this cluster; rank 0 starts a new one once it "
                       "notices the loss"));
    c.closing = true;
    return absl::OkStatus();
  }
  wire::Mac proof = wire::server_proof(token, c.server_nonce, client);
  queue(c, MsgType::kAuthOk, wire::as_view(proof));
  c.authed = true;
  c.key = wire::session_key(token, c.server_nonce, client);
  c.rank = static_cast<int>(rank);
  connected_ranks.insert(c.rank);
  joined_ranks.insert(c.rank);
  return absl::OkStatus();
}

void State::complete_waiters(const std::string& key, bool barrier) {
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

absl::Status State::handle_request(uint64_t id, Conn& c, MsgType type, std::string_view payload) {
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

absl::Status State::drain_input(uint64_t id, Conn& c) {
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

}  // namespace tandem::transport::store
