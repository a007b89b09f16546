// The serving front's security rules as pure functions: where it may listen
// without a token, which TLS flags go together, and the bearer-token check
// (constant time, so the comparison leaks nothing about the token).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace tandem::launcher::serve {

struct ListenAddress {
  std::string host;  // as given, brackets of an IPv6 literal removed
  uint16_t port = 0;
};

// "HOST:PORT" or "[V6]:PORT"; INVALID_ARGUMENT naming `flag` otherwise.
absl::StatusOr<ListenAddress> parse_host_port(std::string_view flag, std::string_view value);

// localhost, 127.0.0.0/8 and ::1.
bool is_loopback_host(std::string_view host);

struct SecurityFlags {
  std::string listen;           // --listen
  std::string auth_token_file;  // --auth-token-file
  std::string tls_cert;         // --tls-cert
  std::string tls_key;          // --tls-key
  std::string tls_ca;           // --tls-ca: require and verify client certificates (mTLS)
};

// Refuses a non-loopback --listen without --auth-token-file, and TLS flags
// that do not go together; the message says what to add.
absl::Status check_security(const SecurityFlags& flags);

// True when `authorization` is "Bearer <token>" (scheme case-insensitive).
// The time taken depends only on the token's length.
bool bearer_token_matches(std::string_view authorization, std::string_view token);

// A file's whole contents (PEM certificates and keys), NOT_FOUND naming `flag`.
absl::StatusOr<std::string> read_pem(std::string_view flag, const std::string& path);

}  // namespace tandem::launcher::serve
