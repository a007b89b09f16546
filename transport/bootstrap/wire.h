// The bootstrap store's wire format: a fixed 12-byte header (magic, type,
// payload length) then the payload; after the handshake every frame also
// carries a 32-byte HMAC-SHA256 over a per-direction sequence number, the
// header and the payload, keyed by a session key that only holders of the
// cluster token can derive. Everything read here comes from an untrusted
// socket: lengths are checked against kMaxFramePayload before any allocation.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem::transport::wire {

inline constexpr uint32_t kMagic = 0x31424454;  // "TDB1" little-endian
inline constexpr size_t kHeaderBytes = 12;
inline constexpr size_t kMacBytes = 32;
inline constexpr size_t kNonceBytes = 32;
inline constexpr uint32_t kMaxFramePayload = 1u << 20;
inline constexpr uint32_t kMaxKeyBytes = 256;
inline constexpr uint32_t kProtocolVersion = 1;

enum class MsgType : uint8_t {
  kHello = 1,     // server -> client: version u32, server nonce
  kAuth = 2,      // client -> server: client nonce, rank u32, world u32, mac
  kAuthOk = 3,    // server -> client: mac proving the server holds the token
  kAuthFail = 4,  // server -> client: reason string (then the server closes)
  kSet = 5,       // key, value -> kOk
  kGet = 6,       // key, timeout_ms u32 -> kValue or kTimeout
  kBarrier = 7,   // name, timeout_ms u32 -> kOk or kTimeout(missing ranks)
  kOk = 8,
  kValue = 9,     // value
  kTimeout = 10,  // message string
  kError = 11,    // message string
  // server -> client, instead of kAuthOk: reason string. This rank left the
  // cluster that the store serves (it restarted); it may connect again to the
  // cluster rank 0 starts next, on the same address.
  kRetryLater = 12,
};
inline constexpr uint8_t kMaxMsgType = 12;

struct FrameHeader {
  MsgType type;
  uint32_t length;  // payload bytes, excluding the MAC
};

// Parses and validates a header (magic, type, length <= max_payload).
absl::StatusOr<FrameHeader> parse_header(std::span<const uint8_t> bytes, uint32_t max_payload);
std::array<uint8_t, kHeaderBytes> encode_header(MsgType type, uint32_t length);

// Builds a payload from fixed-width little-endian integers and length-prefixed
// byte strings.
class Writer {
 public:
  Writer& u32(uint32_t v);
  Writer& bytes(std::string_view s);  // u32 length + bytes
  Writer& raw(std::span<const uint8_t> s);
  const std::string& data() const { return out_; }

 private:
  std::string out_;
};

// Reads a payload, refusing anything that runs past the end.
class Reader {
 public:
  explicit Reader(std::string_view payload) : in_(payload) {}
  absl::StatusOr<uint32_t> u32();
  absl::StatusOr<std::string_view> bytes(uint32_t max_len);
  absl::StatusOr<std::string_view> raw(size_t n);
  // OK only when every byte was consumed.
  absl::Status done() const;

 private:
  std::string_view in_;
};

// Cryptography (OpenSSL libcrypto).
using Mac = std::array<uint8_t, kMacBytes>;
using Nonce = std::array<uint8_t, kNonceBytes>;
Mac hmac_sha256(std::string_view key, std::span<const std::string_view> parts);
absl::StatusOr<Nonce> random_nonce();
bool mac_equal(std::span<const uint8_t> a, std::span<const uint8_t> b);  // constant time
inline std::string_view as_view(std::span<const uint8_t> s) {
  return {reinterpret_cast<const char*>(s.data()), s.size()};
}

// The MAC a client sends to prove it holds the token, the server's proof
// back, and the session key both sides then use for every frame.
Mac client_proof(std::string_view token, const Nonce& server, const Nonce& client, uint32_t rank,
                 uint32_t world);
Mac server_proof(std::string_view token, const Nonce& server, const Nonce& client);
std::string session_key(std::string_view token, const Nonce& server, const Nonce& client);
// direction: 0 client->server, 1 server->client.
Mac frame_mac(std::string_view session_key, uint8_t direction, uint64_t seq,
              std::span<const uint8_t> header, std::string_view payload);

}  // namespace tandem::transport::wire
