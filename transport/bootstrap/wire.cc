#include "transport/bootstrap/wire.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tandem::transport::wire {
namespace {

void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t get_u32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}
std::string le32(uint32_t v) {
  std::string s(4, '\0');
  put_u32(reinterpret_cast<uint8_t*>(s.data()), v);
  return s;
}

}  // namespace

absl::StatusOr<FrameHeader> parse_header(std::span<const uint8_t> bytes, uint32_t max_payload) {
  if (bytes.size() < kHeaderBytes) return absl::InvalidArgumentError("short frame header");
  if (get_u32(bytes.data()) != kMagic) {
    return absl::InvalidArgumentError("bad frame magic (not a Tandem bootstrap peer?)");
  }
  uint8_t type = bytes[4];
  if (type == 0 || type > kMaxMsgType) {
    return absl::InvalidArgumentError(absl::StrCat("unknown frame type ", type));
  }
  if (bytes[5] != 0 || bytes[6] != 0 || bytes[7] != 0) {
    return absl::InvalidArgumentError("nonzero reserved header bytes");
  }
  uint32_t length = get_u32(bytes.data() + 8);
  if (length > max_payload) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame payload of ", length, " bytes exceeds the limit of ", max_payload));
  }
  return FrameHeader{static_cast<MsgType>(type), length};
}

std::array<uint8_t, kHeaderBytes> encode_header(MsgType type, uint32_t length) {
  std::array<uint8_t, kHeaderBytes> h{};
  put_u32(h.data(), kMagic);
  h[4] = static_cast<uint8_t>(type);
  put_u32(h.data() + 8, length);
  return h;
}

Writer& Writer::u32(uint32_t v) {
  out_ += le32(v);
  return *this;
}
Writer& Writer::bytes(std::string_view s) {
  TANDEM_CHECK(s.size() <= kMaxFramePayload);
  u32(static_cast<uint32_t>(s.size()));
  out_.append(s);
  return *this;
}
Writer& Writer::raw(std::span<const uint8_t> s) {
  out_.append(as_view(s));
  return *this;
}

absl::StatusOr<uint32_t> Reader::u32() {
  if (in_.size() < 4) return absl::InvalidArgumentError("payload ends inside an integer");
  uint32_t v = get_u32(reinterpret_cast<const uint8_t*>(in_.data()));
  in_.remove_prefix(4);
  return v;
}
absl::StatusOr<std::string_view> Reader::bytes(uint32_t max_len) {
  TANDEM_ASSIGN_OR_RETURN(uint32_t n, u32());
  if (n > max_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("string of ", n, " bytes exceeds the limit of ", max_len));
  }
  return raw(n);
}
absl::StatusOr<std::string_view> Reader::raw(size_t n) {
  if (in_.size() < n) return absl::InvalidArgumentError("payload ends inside a string");
  std::string_view s = in_.substr(0, n);
  in_.remove_prefix(n);
  return s;
}
absl::Status Reader::done() const {
  if (!in_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(in_.size(), " trailing payload bytes"));
  }
  return absl::OkStatus();
}

Mac hmac_sha256(std::string_view key, std::span<const std::string_view> parts) {
  Mac out{};
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  TANDEM_CHECK(mac != nullptr);
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  TANDEM_CHECK(ctx != nullptr);
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                         OSSL_PARAM_construct_end()};
  TANDEM_CHECK(EVP_MAC_init(ctx, reinterpret_cast<const unsigned char*>(key.data()), key.size(),
                            params) == 1);
  for (std::string_view p : parts) {
    TANDEM_CHECK(EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(p.data()), p.size()) ==
                 1);
  }
  size_t len = 0;
  TANDEM_CHECK(EVP_MAC_final(ctx, out.data(), &len, out.size()) == 1 && len == out.size());
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
  return out;
}

absl::StatusOr<Nonce> random_nonce() {
  Nonce n{};
  if (RAND_bytes(n.data(), static_cast<int>(n.size())) != 1) {
    return absl::InternalError("RAND_bytes failed: no entropy for the handshake nonce");
  }
  return n;
}

bool mac_equal(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Mac client_proof(std::string_view token, const Nonce& server, const Nonce& client, uint32_t rank,
                 uint32_t world) {
  std::string r = le32(rank), w = le32(world);
  std::string_view parts[] = {"tandem-client-v1", as_view(server), as_view(client), r, w};
  return hmac_sha256(token, parts);
}

Mac server_proof(std::string_view token, const Nonce& server, const Nonce& client) {
  std::string_view parts[] = {"tandem-server-v1", as_view(server), as_view(client)};
  return hmac_sha256(token, parts);
}

std::string session_key(std::string_view token, const Nonce& server, const Nonce& client) {
  std::string_view parts[] = {"tandem-session-v1", as_view(server), as_view(client)};
  Mac k = hmac_sha256(token, parts);
  return std::string(as_view(k));
}

Mac frame_mac(std::string_view session_key, uint8_t direction, uint64_t seq,
              std::span<const uint8_t> header, std::string_view payload) {
  uint8_t prefix[9];
  prefix[0] = direction;
  for (int i = 0; i < 8; ++i) prefix[1 + i] = static_cast<uint8_t>(seq >> (8 * i));
  std::string_view parts[] = {as_view(prefix), as_view(header), payload};
  return hmac_sha256(session_key, parts);
}

}  // namespace tandem::transport::wire
