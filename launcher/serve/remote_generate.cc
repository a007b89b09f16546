#include "launcher/serve/remote_generate.h"

#include <grpcpp/grpcpp.h>

#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "launcher/commands.h"
#include "launcher/serve/security.h"
#include "tandem/v1/inference.grpc.pb.h"

namespace tandem::launcher::serve {
namespace {

absl::Status to_absl(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat("the server says: ", s.error_message()));
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials(
    const RemoteGenerateOptions& o) {
  if (o.tls_ca.empty() && o.tls_cert.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  if (!o.tls_ca.empty()) {
    absl::StatusOr<std::string> ca = read_pem("--tls-ca", o.tls_ca);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
  }
  if (!o.tls_cert.empty()) {
    absl::StatusOr<std::string> cert = read_pem("--tls-cert", o.tls_cert);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = read_pem("--tls-key", o.tls_key);
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *cert;
    ssl.pem_private_key = *key;
  }
  return grpc::SslCredentials(ssl);
}

void set_call_options(grpc::ClientContext& ctx, const std::string& token, double seconds) {
  if (!token.empty()) ctx.AddMetadata("authorization", absl::StrCat("Bearer ", token));
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
}

}  // namespace

int run_remote_generate(const RemoteGenerateOptions& o) {
  if (absl::StatusOr<ListenAddress> a = parse_host_port("--server", o.server); !a.ok()) {
    return report_error("generate", a.status());
  }
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    return report_error("generate", absl::InvalidArgumentError(
                                        "--tls-cert and --tls-key go together: give both or neither"));
  }
  std::string token;
  if (!o.auth_token_file.empty()) {
    absl::StatusOr<std::string> text = read_pem("--auth-token-file", o.auth_token_file);
    if (!text.ok()) return report_error("generate", text.status());
    token = std::string(absl::StripAsciiWhitespace(*text));
  }
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds = credentials(o);
  if (!creds.ok()) return report_error("generate", creds.status());
  auto channel = grpc::CreateChannel(o.server, *creds);
  auto stub = v1::InferenceService::NewStub(channel);

  v1::ModelInfo info;
  {
    grpc::ClientContext ctx;
    set_call_options(ctx, token, std::min(o.timeout_seconds, 30.0));
    ctx.set_wait_for_ready(false);
    grpc::Status s = stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
    if (!s.ok()) {
      return report_error("generate",
                          absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                                       absl::StrCat("--server ", o.server, ": ", s.error_message())));
    }
  }
  std::fprintf(stderr, "server: %s; model %s (%d rank%s)\n", o.server.c_str(), info.name().c_str(),
               info.world_size(), info.world_size() == 1 ? "" : "s");

  v1::GenerateRequest request;
  request.set_text(o.prompt);
  request.set_no_bos(o.no_bos);
  request.set_max_tokens(o.max_tokens);
  request.set_ignore_eos(o.ignore_eos);
  v1::SamplingParams* s = request.mutable_sampling();
  s->set_temperature(o.sampling.temperature);
  s->set_top_k(o.sampling.top_k);
  s->set_top_p(o.sampling.top_p);
  s->set_min_p(o.sampling.min_p);
  s->set_repeat_penalty(o.sampling.repeat_penalty);
  s->set_frequency_penalty(o.sampling.frequency_penalty);
  s->set_presence_penalty(o.sampling.presence_penalty);
  s->set_repeat_last_n(o.sampling.repeat_last_n);
  if (o.seed_given) s->set_seed(o.sampling.seed);

  grpc::ClientContext ctx;
  set_call_options(ctx, token, o.timeout_seconds);
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = stub->Generate(&ctx, request);
  v1::GenerateResponse message;
  std::vector<int32_t> ids;
  v1::Finished finished;
  bool got_finished = false;
  while (reader->Read(&message)) {
    if (message.has_delta()) {
      const std::string& text = message.delta().text();
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
      ids.insert(ids.end(), message.delta().token_ids().begin(), message.delta().token_ids().end());
    } else if (message.has_finished()) {
      finished = message.finished();
      got_finished = true;
    }
  }
  grpc::Status status = reader->Finish();
  std::fputc('\n', stdout);
  std::fflush(stdout);
  if (!status.ok()) return report_error("generate", to_absl(status));
  if (!got_finished) {
    return report_error("generate", absl::DataLossError("the stream ended without a result"));
  }
  if (o.print_token_ids) {
    std::string line;
    for (int32_t id : ids) absl::StrAppend(&line, line.empty() ? "" : " ", id);
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }
  const v1::Usage& u = finished.usage();
  std::fprintf(stderr, "prompt: %d tokens in %.3f s (%.1f tokens/s)\n", u.prompt_tokens(),
               u.prompt_seconds(), u.prompt_seconds() > 0 ? u.prompt_tokens() / u.prompt_seconds() : 0.0);
  const double steps = u.completion_tokens() > 1 ? u.completion_tokens() - 1 : 0;
  const char* reason = finished.reason() == v1::FINISH_REASON_LENGTH ? "length" : "stop";
  std::fprintf(stderr, "decode: %d tokens in %.3f s (%.2f tokens/s); finish: %s; seed %llu\n",
               u.completion_tokens(), u.decode_seconds(),
               u.decode_seconds() > 0 ? steps / u.decode_seconds() : 0.0, reason,
               static_cast<unsigned long long>(finished.seed()));
  return 0;
}

}  // namespace tandem::launcher::serve
