#include "transport/bootstrap/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tandem::transport {
namespace {

// The first of `names` that is set; its name goes into error messages.
struct Found {
  const char* name = nullptr;
  const char* value = nullptr;
};

Found first_set(const EnvLookup& env, std::initializer_list<const char*> names) {
  for (const char* name : names) {
    const char* value = env(name);
    if (value != nullptr && value[0] != '\0') return {name, value};
  }
  return {};
}

absl::StatusOr<int64_t> parse_int(const Found& f, int64_t lo, int64_t hi) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(f.value, &v) || v < lo || v > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.name, "='", f.value, "' is not an integer in [", lo, ", ", hi, "]"));
  }
  return v;
}

}  // namespace

absl::StatusOr<std::string> read_token_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::InvalidArgumentError(absl::StrCat("TANDEM_CLUSTER_TOKEN_FILE='", path,
                                                   "' cannot be opened: ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat("TANDEM_CLUSTER_TOKEN_FILE='", path, "' is not a regular file"));
  }
  if (st.st_mode & S_IROTH) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("TANDEM_CLUSTER_TOKEN_FILE='", path,
                                                   "' is readable by every user: chmod 600 it"));
  }
  if (st.st_mode & S_IRGRP) {
    std::fprintf(stderr, "tandem/bootstrap: warning: token file %s is group-readable\n",
                 path.c_str());
  }
  constexpr size_t kMaxToken = 4096;
  std::string token(kMaxToken + 1, '\0');
  size_t got = 0;
  while (got < token.size()) {
    ssize_t n = ::read(fd, token.data() + got, token.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  if (got > kMaxToken) {
    return absl::InvalidArgumentError(absl::StrCat("TANDEM_CLUSTER_TOKEN_FILE='", path,
                                                   "' is longer than ", kMaxToken, " bytes"));
  }
  token.resize(got);
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ' ||
                            token.back() == '\t')) {
    token.pop_back();
  }
  if (token.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("TANDEM_CLUSTER_TOKEN_FILE='", path, "' holds an empty token"));
  }
  return token;
}

absl::StatusOr<BootstrapConfig> config_from_env(const EnvLookup& env) {
  BootstrapConfig c;
  Found size = first_set(env, {"TANDEM_WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"});
  if (size.name == nullptr) {
    return absl::InvalidArgumentError(
        "TANDEM_WORLD_SIZE is not set (nor OMPI_COMM_WORLD_SIZE or PMI_SIZE)");
  }
  TANDEM_ASSIGN_OR_RETURN(int64_t world, parse_int(size, 1, 1 << 20));
  c.world_size = static_cast<int>(world);

  Found rank = first_set(env, {"TANDEM_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"});
  if (rank.name == nullptr) {
    return absl::InvalidArgumentError(
        "TANDEM_RANK is not set (nor OMPI_COMM_WORLD_RANK or PMI_RANK)");
  }
  TANDEM_ASSIGN_OR_RETURN(int64_t r, parse_int(rank, 0, world - 1));
  c.rank = static_cast<int>(r);

  Found addr = first_set(env, {"TANDEM_MASTER_ADDR"});
  if (addr.name != nullptr) {
    c.master_addr = addr.value;
  } else if (c.world_size > 1) {
    return absl::InvalidArgumentError("TANDEM_MASTER_ADDR is not set");
  }
  Found port = first_set(env, {"TANDEM_MASTER_PORT"});
  if (port.name != nullptr) {
    // Port 0 lets rank 0 bind an ephemeral port; the others must know it.
    TANDEM_ASSIGN_OR_RETURN(int64_t p, parse_int(port, c.rank == 0 ? 0 : 1, 65535));
    c.master_port = static_cast<uint16_t>(p);
  } else if (c.world_size > 1) {
    return absl::InvalidArgumentError("TANDEM_MASTER_PORT is not set");
  }
  Found timeout = first_set(env, {"TANDEM_BOOTSTRAP_TIMEOUT_MS"});
  if (timeout.name != nullptr) {
    TANDEM_ASSIGN_OR_RETURN(int64_t ms, parse_int(timeout, 1, 24LL * 3600 * 1000));
    c.timeout = std::chrono::milliseconds(ms);
  }

  Found token = first_set(env, {"TANDEM_CLUSTER_TOKEN"});
  Found token_file = first_set(env, {"TANDEM_CLUSTER_TOKEN_FILE"});
  if (token.name != nullptr) {
    c.token = token.value;
  } else if (token_file.name != nullptr) {
    TANDEM_ASSIGN_OR_RETURN(c.token, read_token_file(token_file.value));
  } else if (c.world_size > 1) {
    return absl::InvalidArgumentError(
        "TANDEM_CLUSTER_TOKEN is not set (nor TANDEM_CLUSTER_TOKEN_FILE): every rank needs "
        "the cluster token");
  }
  return c;
}

absl::StatusOr<BootstrapConfig> config_from_env() {
  return config_from_env([](const char* name) -> const char* { return std::getenv(name); });
}

}  // namespace tandem::transport
