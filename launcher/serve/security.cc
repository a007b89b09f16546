#include "launcher/serve/security.h"

#include <charconv>
#include <fstream>
#include <iterator>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace tandem::launcher::serve {
namespace {

// Debian's abseil has its own string_view, so absl::EqualsIgnoreCase does not
// take ours.
bool equals_ignore_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (absl::ascii_tolower(static_cast<unsigned char>(a[i])) !=
        absl::ascii_tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<ListenAddress> parse_host_port(std::string_view flag, std::string_view value) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(flag), " '", std::string(value), "': ", std::string(why)));
  };
  const size_t colon = value.rfind(':');
  if (colon == std::string_view::npos) return bad("expected HOST:PORT");
  std::string_view host = value.substr(0, colon);
  const std::string_view port = value.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    return bad("write an IPv6 address in brackets, as [::1]:50051");
  }
  if (host.empty()) return bad("the host is empty");
  unsigned p = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || p > 65535) {
    return bad("the port must be a number in [0, 65535]");
  }
  return ListenAddress{std::string(host), static_cast<uint16_t>(p)};
}

bool is_loopback_host(std::string_view host) {
  if (equals_ignore_case(host, "localhost") || host == "::1") return true;
  if (host.substr(0, 4) != "127.") return false;
  int dots = 0;
  for (char c : host) {
    if (c == '.') {
      ++dots;
    } else if (c < '0' || c > '9') {
      return false;
    }
  }
  return dots == 3;
}

absl::Status check_security(const SecurityFlags& f) {
  auto listen = parse_host_port("--listen", f.listen);
  if (!listen.ok()) return listen.status();
  if (f.tls_cert.empty() != f.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together: give both or neither");
  }
  if (!f.tls_ca.empty() && f.tls_cert.empty()) {
    return absl::InvalidArgumentError(
        "--tls-ca (verify client certificates) needs the server's own --tls-cert and --tls-key");
  }
  if (!is_loopback_host(listen->host) && f.auth_token_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--listen ", f.listen,
        " is reachable from other hosts: give --auth-token-file FILE (a bearer token that "
        "clients send) and preferably --tls-cert/--tls-key, or listen on 127.0.0.1"));
  }
  return absl::OkStatus();
}

bool bearer_token_matches(std::string_view authorization, std::string_view token) {
  constexpr std::string_view kScheme = "bearer ";
  if (token.empty() || authorization.size() < kScheme.size() ||
      !equals_ignore_case(authorization.substr(0, kScheme.size()), kScheme)) {
    return false;
  }
  const std::string_view given = authorization.substr(kScheme.size());
  // Every byte of the token is compared whatever the input, so the time says
  // nothing about how much of it matched.
  unsigned diff = given.size() == token.size() ? 0u : 1u;
  for (size_t i = 0; i < token.size(); ++i) {
    const unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff |= g ^ static_cast<unsigned char>(token[i]);
  }
  volatile unsigned sink = diff;  // keeps the loop from being cut short
  return sink == 0;
}

absl::StatusOr<std::string> read_pem(std::string_view flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(std::string(flag), ": cannot read ", path));
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.empty()) return absl::InvalidArgumentError(absl::StrCat(std::string(flag), ": ", path, " is empty"));
  return text;
}

}  // namespace tandem::launcher::serve
