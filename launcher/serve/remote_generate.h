// `tandem generate --server HOST:PORT`: the same flags and output as a local
// generation, over the gRPC API of a `tandem serve`.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/engine/sampler.h"

namespace tandem::launcher::serve {

struct RemoteGenerateOptions {
  std::string server;  // HOST:PORT
  std::string prompt;
  int32_t max_tokens = 128;
  engine::SamplingParams sampling;
  bool seed_given = false;  // otherwise the server picks one and reports it
  bool print_token_ids = false;
  bool ignore_eos = false;
  bool no_bos = false;
  std::string auth_token_file;  // sends "authorization: Bearer <token>"
  std::string tls_ca;           // TLS, trusting this CA
  std::string tls_cert, tls_key;  // client certificate for mTLS
  double timeout_seconds = 600;
};

// Streams the completion to stdout and the figures to stderr; returns the
// exit code (report_error's for failures).
int run_remote_generate(const RemoteGenerateOptions& options);

}  // namespace tandem::launcher::serve
