#include "launcher/serve/security.h"

#include "gtest/gtest.h"

namespace tandem::launcher::serve {
namespace {

TEST(Security, ParsesHostPort) {
  auto a = parse_host_port("--listen", "127.0.0.1:50051");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 50051);
  auto v6 = parse_host_port("--listen", "[::1]:0");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  for (const char* bad : {"127.0.0.1", "127.0.0.1:", ":80", "host:99999", "::1:80", "h:8x"}) {
    auto r = parse_host_port("--listen", bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("--listen"), std::string::npos);
  }
}

TEST(Security, Loopback) {
  for (const char* h : {"127.0.0.1", "127.1.2.3", "localhost", "LOCALHOST", "::1"}) {
    EXPECT_TRUE(is_loopback_host(h)) << h;
  }
  for (const char* h : {"0.0.0.0", "10.0.0.1", "::", "127.0.0.1.evil.com", "127.x.0.1", "host"}) {
    EXPECT_FALSE(is_loopback_host(h)) << h;
  }
}

TEST(Security, RefusesOpenNonLoopbackListen) {
  SecurityFlags f{.listen = "0.0.0.0:50051"};
  absl::Status s = check_security(f);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--auth-token-file"), std::string::npos) << s.message();
  f.auth_token_file = "/some/token";
  EXPECT_TRUE(check_security(f).ok());
  EXPECT_TRUE(check_security({.listen = "127.0.0.1:0"}).ok());
}

TEST(Security, TlsFlagsGoTogether) {
  EXPECT_FALSE(check_security({.listen = "127.0.0.1:1", .tls_cert = "c"}).ok());
  EXPECT_FALSE(check_security({.listen = "127.0.0.1:1", .tls_key = "k"}).ok());
  EXPECT_FALSE(check_security({.listen = "127.0.0.1:1", .tls_ca = "ca"}).ok());
  EXPECT_TRUE(
      check_security({.listen = "127.0.0.1:1", .tls_cert = "c", .tls_key = "k", .tls_ca = "ca"}).ok());
}

TEST(Security, BearerToken) {
  EXPECT_TRUE(bearer_token_matches("Bearer s3cret", "s3cret"));
  EXPECT_TRUE(bearer_token_matches("bearer s3cret", "s3cret"));
  EXPECT_FALSE(bearer_token_matches("Bearer s3cre", "s3cret"));
  EXPECT_FALSE(bearer_token_matches("Bearer s3cret2", "s3cret"));
  EXPECT_FALSE(bearer_token_matches("Bearer S3cret", "s3cret"));
  EXPECT_FALSE(bearer_token_matches("s3cret", "s3cret"));
  EXPECT_FALSE(bearer_token_matches("Basic s3cret", "s3cret"));
  EXPECT_FALSE(bearer_token_matches("Bearer ", "s3cret"));
  EXPECT_FALSE(bearer_token_matches("Bearer x", ""));
}

}  // namespace
}  // namespace tandem::launcher::serve
