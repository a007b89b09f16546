#include "launcher/serve/grpc_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "launcher/serve/request_conversion.h"
#include "tandem/v1/cluster.grpc.pb.h"
#include "tandem/v1/inference.grpc.pb.h"

namespace tandem::launcher::serve {
namespace {

using engine::SchedulerClock;

// How often a streaming call looks at its client's cancellation while it
// waits for tokens.
constexpr auto kCancelPoll = std::chrono::milliseconds(20);
// A Drain without a deadline waits at most this long.
constexpr auto kDrainCap = std::chrono::minutes(10);

grpc::Status to_grpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// The client's deadline on our steady clock (max when it set none).
SchedulerClock::time_point steady_deadline(const grpc::ServerContext& ctx) {
  const auto deadline = ctx.deadline();
  const auto now = std::chrono::system_clock::now();
  if (deadline - now > std::chrono::hours(24 * 365)) return SchedulerClock::time_point::max();
  return SchedulerClock::now() +
         std::chrono::duration_cast<SchedulerClock::duration>(deadline - now);
}

class Auth {
 public:
  explicit Auth(std::string token) : token_(std::move(token)) {}
  grpc::Status check(const grpc::ServerContext& ctx) const {
    if (token_.empty()) return grpc::Status::OK;
    const auto& md = ctx.client_metadata();
    const auto it = md.find("authorization");
    if (it == md.end()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "this server needs the metadata 'authorization: Bearer <token>'");
    }
    if (!bearer_token_matches(std::string_view(it->second.data(), it->second.size()), token_)) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "the bearer token is not accepted");
    }
    return grpc::Status::OK;
  }

 private:
  std::string token_;
};

class InferenceImpl final : public v1::InferenceService::Service {
 public:
  InferenceImpl(ServeBackend& backend, const Auth& auth) : backend_(backend), auth_(auth) {}

  grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    if (grpc::Status s = auth_.check(*ctx); !s.ok()) return s;
    uint64_t seed = 0;
    absl::StatusOr<std::shared_ptr<engine::RequestStream>> stream =
        backend_.generate(*request, steady_deadline(*ctx), &seed);
    if (!stream.ok()) return to_grpc(stream.status());
    engine::StreamChunk chunk;
    v1::GenerateResponse message;
    while (true) {
      if (ctx->IsCancelled()) {
        (*stream)->cancel();
        return grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled");
      }
      if (!(*stream)->read(&chunk, SchedulerClock::now() + kCancelPoll)) continue;
      if (!chunk.tokens.empty() || !chunk.text.empty()) {
        message.Clear();
        v1::Delta* delta = message.mutable_delta();
        delta->mutable_token_ids()->Add(chunk.tokens.begin(), chunk.tokens.end());
        delta->set_text(chunk.text);
        if (!writer->Write(message)) {
          (*stream)->cancel();
          return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
        }
      }
      if (chunk.result) {
        if (absl::Status s = stream_status(*chunk.result); !s.ok()) return to_grpc(s);
        message.Clear();
        *message.mutable_finished() = to_finished(*chunk.result, seed);
        writer->Write(message);
        return grpc::Status::OK;
      }
    }
  }

  grpc::Status Tokenize(grpc::ServerContext* ctx, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override {
    if (grpc::Status s = auth_.check(*ctx); !s.ok()) return s;
    absl::StatusOr<v1::TokenizeResponse> r = backend_.tokenize(*request);
    if (!r.ok()) return to_grpc(r.status());
    *response = std::move(*r);
    return grpc::Status::OK;
  }

  grpc::Status GetModelInfo(grpc::ServerContext* ctx, const v1::GetModelInfoRequest*,
                            v1::ModelInfo* response) override {
    if (grpc::Status s = auth_.check(*ctx); !s.ok()) return s;
    absl::StatusOr<v1::ModelInfo> r = backend_.model_info();
    if (!r.ok()) return to_grpc(r.status());
    *response = std::move(*r);
    return grpc::Status::OK;
  }

 private:
  ServeBackend& backend_;
  const Auth& auth_;
};

class ClusterImpl final : public v1::ClusterService::Service {
 public:
  ClusterImpl(ServeBackend& backend, const Auth& auth) : backend_(backend), auth_(auth) {}

  grpc::Status GetStatus(grpc::ServerContext* ctx, const v1::GetStatusRequest*,
                         v1::ClusterStatus* response) override {
    if (grpc::Status s = auth_.check(*ctx); !s.ok()) return s;
    *response = backend_.status();
    return grpc::Status::OK;
  }

  grpc::Status Drain(grpc::ServerContext* ctx, const v1::DrainRequest*,
                     v1::DrainResponse* response) override {
    if (grpc::Status s = auth_.check(*ctx); !s.ok()) return s;
    *response = backend_.drain(std::min(steady_deadline(*ctx), SchedulerClock::now() + kDrainCap));
    return grpc::Status::OK;
  }

  grpc::Status Shutdown(grpc::ServerContext* ctx, const v1::ShutdownRequest* request,
                        v1::ShutdownResponse*) override {
    if (grpc::Status s = auth_.check(*ctx); !s.ok()) return s;
    if (!(request->drain_timeout_seconds() >= 0 && request->drain_timeout_seconds() <= 3600)) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "drain_timeout_seconds: must be in [0, 3600]");
    }
    backend_.request_shutdown(request->drain_timeout_seconds());
    return grpc::Status::OK;
  }

 private:
  ServeBackend& backend_;
  const Auth& auth_;
};

class ApiServerImpl final : public ApiServer {
 public:
  ApiServerImpl(ServeBackend& backend, std::string token)
      : auth_(std::move(token)), inference_(backend, auth_), cluster_(backend, auth_) {}

  absl::Status start(const ApiServerOptions& options) {
    const SecurityFlags& f = options.security;
    std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
    if (!f.tls_cert.empty()) {
      grpc::SslServerCredentialsOptions ssl(
          f.tls_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                           : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
      absl::StatusOr<std::string> cert = read_pem("--tls-cert", f.tls_cert);
      if (!cert.ok()) return cert.status();
      absl::StatusOr<std::string> key = read_pem("--tls-key", f.tls_key);
      if (!key.ok()) return key.status();
      ssl.pem_key_cert_pairs.push_back({*key, *cert});
      if (!f.tls_ca.empty()) {
        absl::StatusOr<std::string> ca = read_pem("--tls-ca", f.tls_ca);
        if (!ca.ok()) return ca.status();
        ssl.pem_root_certs = *ca;
      }
      credentials = grpc::SslServerCredentials(ssl);
    }
    absl::StatusOr<ListenAddress> listen = parse_host_port("--listen", f.listen);
    if (!listen.ok()) return listen.status();
    const std::string address =
        listen->host.find(':') != std::string::npos
            ? absl::StrCat("[", listen->host, "]:", listen->port)
            : absl::StrCat(listen->host, ":", listen->port);
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    builder.AddListeningPort(address, credentials, &port_);
    builder.RegisterService(&inference_);
    builder.RegisterService(&cluster_);
    server_ = builder.BuildAndStart();
    if (server_ == nullptr || port_ == 0) {
      return absl::UnavailableError(absl::StrCat("--listen ", f.listen,
                                                 ": cannot listen there (in use, or not an "
                                                 "address of this host?)"));
    }
    set_serving(false);
    return absl::OkStatus();
  }

  int port() const override { return port_; }

  void set_serving(bool serving) override {
    grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
    if (health == nullptr) return;
    health->SetServingStatus(serving);
    health->SetServingStatus("tandem.v1.InferenceService", serving);
    health->SetServingStatus("tandem.v1.ClusterService", serving);
  }

  void shutdown(std::chrono::system_clock::time_point deadline) override {
    server_->Shutdown(deadline);
    server_->Wait();
  }

 private:
  Auth auth_;
  InferenceImpl inference_;
  ClusterImpl cluster_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ApiServer>> ApiServer::start(const ApiServerOptions& options,
                                                            ServeBackend& backend) {
  if (absl::Status s = check_security(options.security); !s.ok()) return s;
  std::string token;
  if (!options.security.auth_token_file.empty()) {
    absl::StatusOr<std::string> text = read_pem("--auth-token-file", options.security.auth_token_file);
    if (!text.ok()) return text.status();
    token = std::string(absl::StripAsciiWhitespace(*text));
    if (token.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--auth-token-file: ", options.security.auth_token_file, " holds only whitespace"));
    }
  }
  auto server = std::make_unique<ApiServerImpl>(backend, std::move(token));
  if (absl::Status s = server->start(options); !s.ok()) return s;
  return server;
}

}  // namespace tandem::launcher::serve
