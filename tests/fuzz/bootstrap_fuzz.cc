// libFuzzer target for the bootstrap store's wire protocol (the rank-0 side,
// which any process that can reach its port may talk to). The first input
// byte picks how the rest is fed to a store connection:
//   even: raw bytes, as a stranger would send them (handshake, header checks,
//         limits before any allocation);
//   odd:  a valid handshake first, then frames built from the input (type,
//         length, payload) with correct MACs, so the fuzzer reaches the
//         request parsers behind the MAC check; an input bit per frame may
//         spoil its MAC or header instead.
// Bytes arrive in pieces cut where the input says, as from a socket. Every
// input must end in a status, never a crash; what the store queues must
// parse as frames; and a dropped connection (error) must stay dropped.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>

#include "transport/bootstrap/store_state.h"
#include "transport/bootstrap/wire.h"

namespace {

namespace store = tandem::transport::store;
namespace wire = tandem::transport::wire;

constexpr char kToken[] = "fuzz-cluster-token";
constexpr int kWorld = 3;

void fail(const char* what) {
  std::fprintf(stderr, "bootstrap_fuzz: %s\n", what);
  std::abort();
}

// Reads the input front to back; past the end everything is zero.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : rest_(reinterpret_cast<const char*>(data), size) {}
  uint8_t byte() {
    if (rest_.empty()) return 0;
    const auto b = static_cast<uint8_t>(rest_[0]);
    rest_.remove_prefix(1);
    return b;
  }
  uint16_t u16() { return static_cast<uint16_t>(byte() | byte() << 8); }
  std::string_view take(size_t n) {
    n = std::min(n, rest_.size());
    std::string_view s = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return s;
  }
  bool empty() const { return rest_.empty(); }

 private:
  std::string_view rest_;
};

// Every frame the store queued must be one the client side accepts.
void check_queued(const store::Conn& c) {
  std::string_view out = c.out;
  bool authed = false;
  while (!out.empty()) {
    if (out.size() < wire::kHeaderBytes) fail("queued a short header");
    auto header = wire::parse_header(
        {reinterpret_cast<const uint8_t*>(out.data()), wire::kHeaderBytes}, wire::kMaxFramePayload);
    if (!header.ok()) fail("queued a header the client refuses");
    size_t need = wire::kHeaderBytes + header->length + (authed ? wire::kMacBytes : 0);
    if (out.size() < need) fail("queued a truncated frame");
    // kHello and kAuthOk/kAuthFail go out before the session key exists.
    if (header->type == wire::MsgType::kAuthOk) authed = true;
    out.remove_prefix(need);
  }
}

// The client's kAuth frame for the store's nonce.
std::string auth_frame(const store::Conn& c, wire::Nonce* client_nonce) {
  for (size_t i = 0; i < client_nonce->size(); ++i) (*client_nonce)[i] = static_cast<uint8_t>(i);
  wire::Mac proof = wire::client_proof(kToken, c.server_nonce, *client_nonce, 1, kWorld);
  std::string payload = wire::Writer().raw(*client_nonce).u32(1).u32(kWorld).raw(proof).data();
  auto header = wire::encode_header(wire::MsgType::kAuth, static_cast<uint32_t>(payload.size()));
  return std::string(wire::as_view(header)) + payload;
}

// Frames built from the input, MACed with the session key.
std::string session_frames(Input& in, const std::string& key) {
  std::string bytes;
  uint64_t seq = 0;
  while (!in.empty()) {
    const uint8_t type = in.byte();
    const uint8_t flags = in.byte();
    std::string payload(in.take(in.u16()));
    auto header = wire::encode_header(static_cast<wire::MsgType>(type),
                                      static_cast<uint32_t>(payload.size()));
    wire::Mac mac = wire::frame_mac(key, 0, seq++, header, payload);
    if (flags & 1) mac[flags % mac.size()] ^= 1;
    if (flags & 2) header[flags % header.size()] ^= static_cast<uint8_t>(flags);
    bytes += wire::as_view(header);
    bytes += payload;
    bytes += wire::as_view(mac);
  }
  return bytes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  const uint8_t mode = in.byte();
  const uint8_t piece = in.byte();  // bytes per socket read, 0: all at once

  store::State st;
  st.world_size = kWorld;
  st.token = kToken;
  // A rank that already waits on a key and a barrier, so requests can
  // complete waiters.
  store::Conn& other = st.conns[1];
  other.authed = true;
  other.rank = 0;
  st.connected_ranks.insert(0);
  st.waiters.push_back({1, false, "k", {}});
  st.waiters.push_back({1, true, "b", {}});

  const uint64_t id = 2;
  store::Conn& c = st.conns[id];
  for (size_t i = 0; i < c.server_nonce.size(); ++i) {
    c.server_nonce[i] = static_cast<uint8_t>(7 * i);
  }

  std::string bytes;
  if (mode & 1) {
    wire::Nonce client{};
    bytes = auth_frame(c, &client);
    bytes += session_frames(in, wire::session_key(kToken, c.server_nonce, client));
  } else {
    bytes = std::string(in.take(size));
  }

  const size_t step = piece == 0 ? bytes.size() : piece;
  bool dropped = false;
  for (size_t at = 0; at < bytes.size() && !dropped; at += step) {
    c.in.append(bytes, at, step);
    dropped = !st.drain_input(id, c).ok();
  }
  const bool handshake_sent = bytes.size() >= wire::kHeaderBytes + store::kAuthPayload;
  if ((mode & 1) && handshake_sent && !dropped && !c.authed) {
    fail("a valid handshake was not accepted");
  }
  check_queued(c);
  if (st.kv_bytes > store::kMaxStoreBytes) fail("the store outgrew its limit");
  return 0;
}
