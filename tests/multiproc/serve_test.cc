// `tandem serve` as users run it: real server processes on loopback and a
// real gRPC client. Greedy streams equal local generation, health follows
// load -> serving -> draining -> shutdown, bad requests get their field named
// while the server keeps serving, cancellation frees the slot, the slot limit
// is RESOURCE_EXHAUSTED, auth and listen rules hold, --local-ranks 2 starts
// and stops cleanly, and SIGKILL of rank 0 leaves no worker. Every wait is
// bounded; ProcessGroup kills what is left.
#include <grpcpp/grpcpp.h>
#include <sys/prctl.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "process_group.h"
#include "tandem/v1/cluster.grpc.pb.h"
#include "tandem/v1/inference.grpc.pb.h"

namespace tandem {
namespace {

using grpc::health::v1::HealthCheckResponse;
using std::chrono::milliseconds;
using testing::ProcessGroup;

constexpr char kModel[] = TANDEM_TEST_DATA_DIR "/llama-tiny/tiny-f32.gguf";
constexpr char kPrompt[] = "Hello my name is";

struct Streamed {
  std::vector<int32_t> ids;
  std::string text;
  grpc::Status status;
  v1::Finished finished;
};

// One `tandem serve` on 127.0.0.1 and clients for it.
class Server {
 public:
  // `launcher` goes before the tandem binary (mpirun and its flags).
  Server(ProcessGroup& group, std::vector<std::string> args,
         const std::map<std::string, std::string>& env = {},
         const std::vector<std::string>& launcher = {})
      : group_(group) {
    std::vector<std::string> argv = launcher;
    for (const char* a : {TANDEM_BINARY, "serve", "--model", kModel, "--threads", "1", "--listen",
                          "127.0.0.1:0"}) {
      argv.push_back(a);
    }
    argv.insert(argv.end(), args.begin(), args.end());
    index_ = group_.spawn(argv, env, "serve" + std::to_string(counter_++));
  }

  // Waits for the "listening on" line and connects.
  bool connect(milliseconds timeout = milliseconds(20000)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      const std::string err = group_.err(index_);
      const size_t at = err.find("listening on 127.0.0.1:");
      if (at != std::string::npos) {
        port_ = std::atoi(err.c_str() + at + std::strlen("listening on 127.0.0.1:"));
        address_ = "127.0.0.1:" + std::to_string(port_);
        channel_ = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
        inference_ = v1::InferenceService::NewStub(channel_);
        cluster_ = v1::ClusterService::NewStub(channel_);
        health_ = grpc::health::v1::Health::NewStub(channel_);
        return true;
      }
      if (exited()) return false;
      std::this_thread::sleep_for(milliseconds(20));
    }
    return false;
  }

  bool exited() { return !group_.running(index_); }

  HealthCheckResponse::ServingStatus health(const std::string& service = "") {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(2000));
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    HealthCheckResponse resp;
    if (!health_->Check(&ctx, req, &resp).ok()) return HealthCheckResponse::UNKNOWN;
    return resp.status();
  }

  bool wait_health(HealthCheckResponse::ServingStatus want, milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (health() == want) return true;
      std::this_thread::sleep_for(milliseconds(20));
    }
    return false;
  }

  v1::ClusterStatus status() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(5000));
    v1::ClusterStatus s;
    EXPECT_TRUE(cluster_->GetStatus(&ctx, v1::GetStatusRequest(), &s).ok());
    return s;
  }

  // Streams a whole generation. `after_first` runs once the first delta is in.
  Streamed generate(const v1::GenerateRequest& request, const std::string& token = "",
                    const std::function<void(grpc::ClientContext&)>& after_first = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(60000));
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    Streamed out;
    auto reader = inference_->Generate(&ctx, request);
    v1::GenerateResponse m;
    bool first = true;
    while (reader->Read(&m)) {
      if (m.has_delta()) {
        out.ids.insert(out.ids.end(), m.delta().token_ids().begin(), m.delta().token_ids().end());
        out.text += m.delta().text();
        if (first && after_first) after_first(ctx);
        first = false;
      } else {
        out.finished = m.finished();
      }
    }
    out.status = reader->Finish();
    return out;
  }

  // Polls GetStatus until the cluster has restarted `restarts` times and
  // serves again, or `timeout` passes; the last status either way.
  v1::ClusterStatus wait_serving_after_restarts(int restarts, milliseconds timeout) {
    v1::ClusterStatus s;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    do {
      std::this_thread::sleep_for(milliseconds(50));
      s = status();
    } while (!(s.restarts() == restarts && s.state() == v1::SERVING_STATE_SERVING) &&
             std::chrono::steady_clock::now() < deadline);
    return s;
  }

  grpc::Status call_shutdown() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(5000));
    v1::ShutdownResponse r;
    return cluster_->Shutdown(&ctx, v1::ShutdownRequest(), &r);
  }

  int index() const { return index_; }
  pid_t pid() const { return group_.child(index_).pid; }
  const std::string& address() const { return address_; }
  v1::ClusterService::Stub& cluster() { return *cluster_; }
  v1::InferenceService::Stub& inference() { return *inference_; }

 private:
  static inline int counter_ = 0;
  ProcessGroup& group_;
  int index_ = -1;
  int port_ = 0;
  std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::InferenceService::Stub> inference_;
  std::unique_ptr<v1::ClusterService::Stub> cluster_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

v1::GenerateRequest greedy(const std::string& text, int max_tokens) {
  v1::GenerateRequest r;
  r.set_text(text);
  r.set_max_tokens(max_tokens);
  r.set_ignore_eos(true);
  r.mutable_sampling()->set_temperature(0);
  return r;
}

struct CommandResult {
  int code = -1;
  std::string out, err;
};

CommandResult run(const std::string& args) {
  const std::string dir = testing::make_temp_dir();
  const std::string cmd = "timeout -s KILL 60 " + args + " >" + dir + "/out 2>" + dir + "/err";
  const int status = std::system(cmd.c_str());
  CommandResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ProcessGroup::slurp(dir + "/out");
  r.err = ProcessGroup::slurp(dir + "/err");
  std::filesystem::remove_all(dir);
  return r;
}

TEST(Serve, GreedyStreamEqualsLocalGenerate) {
  ProcessGroup group(testing::make_temp_dir());
  Server server(group, {});
  ASSERT_TRUE(server.connect()) << group.describe();
  ASSERT_TRUE(server.wait_health(HealthCheckResponse::SERVING, milliseconds(20000)))
      << group.describe();
  const std::string flags = std::string(" --prompt '") + kPrompt +
                            "' --temperature 0 --max-tokens 24 --ignore-eos --print-token-ids";
  const CommandResult local =
      run(std::string(TANDEM_BINARY) + " generate --model " + kModel + " --threads 1" + flags);
  ASSERT_EQ(local.code, 0) << local.err;
  const CommandResult remote =
      run(std::string(TANDEM_BINARY) + " generate --server " + server.address() + flags);
  ASSERT_EQ(remote.code, 0) << remote.err;
  EXPECT_EQ(remote.out, local.out);
  EXPECT_NE(remote.err.find("finish: length"), std::string::npos) << remote.err;

  // The raw stream: the same ids as the local run's last line.
  const Streamed s = server.generate(greedy(kPrompt, 24));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  std::string ids;
  for (int32_t id : s.ids) ids += (ids.empty() ? "" : " ") + std::to_string(id);
  EXPECT_NE(local.out.find(ids + "\n"), std::string::npos) << local.out << " vs " << ids;
  EXPECT_EQ(s.finished.reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(s.finished.usage().completion_tokens(), 24);
  EXPECT_EQ(s.finished.usage().prompt_tokens(), 13);

  ASSERT_TRUE(server.call_shutdown().ok());
  ASSERT_TRUE(group.wait_all(milliseconds(15000))) << group.describe();
  EXPECT_TRUE(group.exited_ok(server.index())) << group.describe();
}

TEST(Serve, HealthGoesLoadingServingDrainingShutdown) {
  ProcessGroup group(testing::make_temp_dir());
  Server server(group, {"--context", "1024"}, {{"TANDEM_SERVE_TEST_LOAD_DELAY_MS", "1500"}});
  ASSERT_TRUE(server.connect()) << group.describe();
  EXPECT_EQ(server.health(), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(server.health("tandem.v1.InferenceService"), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(server.status().state(), v1::SERVING_STATE_LOADING);
  EXPECT_EQ(server.generate(greedy(kPrompt, 2)).status.error_code(), grpc::StatusCode::UNAVAILABLE);
  ASSERT_TRUE(server.wait_health(HealthCheckResponse::SERVING, milliseconds(20000)))
      << group.describe();
  EXPECT_EQ(server.health("tandem.v1.InferenceService"), HealthCheckResponse::SERVING);
  EXPECT_EQ(server.status().state(), v1::SERVING_STATE_SERVING);

  // A long request in flight, then Drain: health turns NOT_SERVING at once,
  // new requests are refused, the one in flight completes, Drain returns.
  std::promise<void> started;
  auto long_request = std::async(std::launch::async, [&] {
    return server.generate(greedy(kPrompt, 900), "",
                           [&](grpc::ClientContext&) { started.set_value(); });
  });
  ASSERT_EQ(started.get_future().wait_for(std::chrono::seconds(20)), std::future_status::ready);
  auto drain = std::async(std::launch::async, [&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(60000));
    v1::DrainResponse r;
    grpc::Status s = server.cluster().Drain(&ctx, v1::DrainRequest(), &r);
    return std::make_pair(s, r);
  });
  ASSERT_TRUE(server.wait_health(HealthCheckResponse::NOT_SERVING, milliseconds(5000)));
  EXPECT_EQ(server.status().state(), v1::SERVING_STATE_DRAINING);
  const Streamed refused = server.generate(greedy(kPrompt, 2));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(refused.status.error_message().find("draining"), std::string::npos);
  const Streamed finished = long_request.get();
  EXPECT_TRUE(finished.status.ok()) << finished.status.error_message();
  EXPECT_EQ(finished.ids.size(), 900u);
  const auto [drain_status, drained] = drain.get();
  EXPECT_TRUE(drain_status.ok()) << drain_status.error_message();
  EXPECT_EQ(drained.remaining_requests(), 0);

  ASSERT_TRUE(server.call_shutdown().ok());
  ASSERT_TRUE(group.wait_all(milliseconds(15000))) << group.describe();
  EXPECT_TRUE(group.exited_ok(server.index())) << group.describe();
}

TEST(Serve, BadRequestsNameTheFieldAndTheServerKeepsServing) {
  ProcessGroup group(testing::make_temp_dir());
  Server server(group, {"--context", "64"});
  ASSERT_TRUE(server.connect()) << group.describe();
  ASSERT_TRUE(server.wait_health(HealthCheckResponse::SERVING, milliseconds(20000)));
  struct Case {
    std::function<void(v1::GenerateRequest&)> edit;
    std::string field;
  };
  const std::vector<Case> corpus = {
      {[](auto& r) { r.clear_prompt(); }, "prompt:"},
      {[](auto& r) { r.set_text(""); }, "prompt.text: empty"},
      {[](auto& r) { r.mutable_token_ids()->add_ids(99999); }, "prompt: token id 99999"},
      {[](auto& r) { r.set_text(std::string(400, 'x') + " y z"); }, "exceed the context length"},
      {[](auto& r) { r.mutable_sampling()->set_temperature(-1); }, "temperature"},
      {[](auto& r) { r.mutable_sampling()->set_top_p(7); }, "top_p"},
      {[](auto& r) { r.set_max_tokens(-5); }, "max_tokens"},
      {[](auto& r) { r.set_max_tokens(1000); }, "max_tokens"},
      {[](auto& r) { r.add_stop(""); }, "stop[0]"},
  };
  for (const Case& c : corpus) {
    v1::GenerateRequest r = greedy(kPrompt, 4);
    c.edit(r);
    const Streamed s = server.generate(r);
    EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field;
    EXPECT_NE(s.status.error_message().find(c.field), std::string::npos)
        << s.status.error_message() << " should name " << c.field;
  }
  const Streamed ok = server.generate(greedy(kPrompt, 4));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_EQ(ok.ids.size(), 4u);
}

TEST(Serve, SlotLimitAndCancellationFreesTheSlot) {
  ProcessGroup group(testing::make_temp_dir());
  Server server(group, {"--max-sequences", "1"});
  ASSERT_TRUE(server.connect()) << group.describe();
  ASSERT_TRUE(server.wait_health(HealthCheckResponse::SERVING, milliseconds(20000)));
  grpc::StatusCode second = grpc::StatusCode::OK;
  const Streamed cancelled =
      server.generate(greedy(kPrompt, 1500), "", [&](grpc::ClientContext& ctx) {
        second = server.generate(greedy(kPrompt, 2)).status.error_code();
        ctx.TryCancel();
      });
  EXPECT_EQ(second, grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(cancelled.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_LT(cancelled.ids.size(), 1500u);
  // The slot comes back within a step or two.
  bool freed = false;
  for (int i = 0; i < 100 && !freed; ++i) {
    freed = server.status().active_requests() == 0;
    if (!freed) std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_TRUE(freed);
  const Streamed next = server.generate(greedy(kPrompt, 3));
  EXPECT_TRUE(next.status.ok()) << next.status.error_message();
}

TEST(Serve, AuthTokenAndListenRules) {
  // Off loopback without a token: refused with the flag to add.
  const CommandResult open =
      run(std::string(TANDEM_BINARY) + " serve --model " + kModel + " --listen 0.0.0.0:0");
  EXPECT_EQ(open.code, 2);
  EXPECT_NE(open.err.find("--auth-token-file"), std::string::npos) << open.err;

  const std::string dir = testing::make_temp_dir();
  const std::string token_file = dir + "/token";
  std::ofstream(token_file) << "s3cret-token\n";
  std::filesystem::permissions(token_file, std::filesystem::perms::owner_read |
                                               std::filesystem::perms::owner_write);
  ProcessGroup group(testing::make_temp_dir());
  Server server(group, {"--auth-token-file", token_file});
  ASSERT_TRUE(server.connect()) << group.describe();
  // Health stays open to probes.
  ASSERT_TRUE(server.wait_health(HealthCheckResponse::SERVING, milliseconds(20000)));
  EXPECT_EQ(server.generate(greedy(kPrompt, 2)).status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(server.generate(greedy(kPrompt, 2), "wrong").status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  const Streamed ok = server.generate(greedy(kPrompt, 2), "s3cret-token");
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  const CommandResult remote = run(std::string(TANDEM_BINARY) + " generate --server " +
                                   server.address() + " --auth-token-file " + token_file +
                                   " --prompt hi --max-tokens 2");
  EXPECT_EQ(remote.code, 0) << remote.err;
  std::filesystem::remove_all(dir);
}

TEST(Serve, TwoLocalRanksStartAndSigtermStopsEveryRank) {
  ProcessGroup group(testing::make_temp_dir());
  Server server(group, {"--local-ranks", "2"});
  ASSERT_TRUE(server.connect()) << group.describe();
  ASSERT_TRUE(server.wait_health(HealthCheckResponse::SERVING, milliseconds(30000)))
      << group.describe();
  const v1::ClusterStatus s = server.status();
  ASSERT_EQ(s.ranks_size(), 2);
  EXPECT_EQ(s.layout().world_size(), 2);
  EXPECT_EQ(s.layout().launch(), "local-ranks");
  EXPECT_EQ(s.ranks(1).health(), v1::RANK_HEALTH_HEALTHY);
  // The model is split over both ranks, in the layout rank 0's planner chose.
  EXPECT_EQ(s.layout().tp() * s.layout().pp(), 2);
  // The link rank 0 measured at start-up.
  ASSERT_EQ(s.links_size(), 1);
  EXPECT_EQ(s.links(0).rank_a(), 0);
  EXPECT_EQ(s.links(0).rank_b(), 1);
  EXPECT_EQ(s.links(0).transport(), "ucx");
  EXPECT_NE(s.links(0).path().find("tcp/"), std::string::npos) << s.links(0).path();
  EXPECT_GT(s.links(0).latency_us(), 0);
  EXPECT_GT(s.links(0).bandwidth_gbps(), 0);
  EXPECT_NE(group.err(server.index()).find("link rank 0 <-> 1: ucx tcp/"), std::string::npos)
      << group.describe();
  const pid_t worker = s.ranks(1).pid();
  ASSERT_GT(worker, 0);
  // Tensor parallel over two processes streams the single-rank greedy tokens.
  const CommandResult local =
      run(std::string(TANDEM_BINARY) + " generate --model " + kModel + " --threads 1 --prompt '" +
          kPrompt + "' --temperature 0 --max-tokens 16 --ignore-eos --print-token-ids");
  ASSERT_EQ(local.code, 0) << local.err;
  const Streamed two = server.generate(greedy(kPrompt, 16));
  ASSERT_TRUE(two.status.ok()) << two.status.error_message();
  std::string ids;
  for (int32_t id : two.ids) ids += (ids.empty() ? "" : " ") + std::to_string(id);
  EXPECT_NE(local.out.find(ids + "\n"), std::string::npos) << local.out << " vs " << ids;

  ::kill(server.pid(), SIGTERM);
  ASSERT_TRUE(group.wait_all(milliseconds(20000))) << group.describe();
  EXPECT_TRUE(group.exited_ok(server.index())) << group.describe();
  EXPECT_NE(::kill(worker, 0), 0) << "the worker outlived rank 0";
  EXPECT_NE(group.err(server.index()).find("(rank 1): shutting down"), std::string::npos)
      << group.describe();
}

TEST(Serve, LosingAWorkerStopsRankZeroWithTheCause) {
  ProcessGroup group(testing::make_temp_dir());
  Server server(group, {"--local-ranks", "2", "--max-restarts", "0"});
  ASSERT_TRUE(server.connect()) << group.describe();
  ASSERT_TRUE(server.wait_health(HealthCheckResponse::SERVING, milliseconds(30000)))
      << group.describe();
  const pid_t worker = server.status().ranks(1).pid();
  ASSERT_GT(worker, 0);
  ::kill(worker, SIGKILL);
  ASSERT_TRUE(group.wait_all(milliseconds(15000))) << group.describe();
  EXPECT_FALSE(group.exited_ok(server.index()));
  EXPECT_NE(group.err(server.index()).find("rank 1 was killed by signal 9"), std::string::npos)
      << group.describe();
}

// By default rank 0 outlives a lost worker: it starts the cluster anew and
// serves the same answers, and GetStatus says what happened.
TEST(Serve, ALostWorkerIsReplacedAndServingResumes) {
  ProcessGroup group(testing::make_temp_dir());
  Server server(group, {"--local-ranks", "2", "--tp", "2"});
  ASSERT_TRUE(server.connect()) << group.describe();
  ASSERT_TRUE(server.wait_health(HealthCheckResponse::SERVING, milliseconds(30000)))
      << group.describe();
  const Streamed before = server.generate(greedy(kPrompt, 8));
  ASSERT_TRUE(before.status.ok()) << before.status.error_message() << group.describe();
  const pid_t worker = server.status().ranks(1).pid();
  ASSERT_GT(worker, 0);
  ::kill(worker, SIGKILL);

  const v1::ClusterStatus status = server.wait_serving_after_restarts(1, milliseconds(30000));
  ASSERT_EQ(status.restarts(), 1) << group.describe();
  ASSERT_EQ(status.state(), v1::SERVING_STATE_SERVING) << group.describe();
  EXPECT_NE(status.last_failure().find("rank 1 was killed by signal 9"), std::string::npos)
      << status.last_failure();
  ASSERT_EQ(status.ranks_size(), 2);
  EXPECT_NE(status.ranks(1).pid(), worker);
  EXPECT_TRUE(server.wait_health(HealthCheckResponse::SERVING, milliseconds(5000)));

  const Streamed after = server.generate(greedy(kPrompt, 8));
  ASSERT_TRUE(after.status.ok()) << after.status.error_message() << group.describe();
  EXPECT_EQ(after.ids, before.ids);
  // Counted across restarts (a request is counted once its slot is retired,
  // just after its stream ends).
  uint64_t total = 0;
  for (int i = 0; i < 100 && total < 2; ++i) {
    total = server.status().requests_total();
    if (total < 2) std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_EQ(total, 2u);

  ::kill(server.pid(), SIGTERM);
  ASSERT_TRUE(group.wait_all(milliseconds(20000))) << group.describe();
  EXPECT_TRUE(group.exited_ok(server.index())) << group.describe();
  EXPECT_NE(group.err(server.index()).find("restarting the cluster"), std::string::npos)
      << group.describe();
}

// Ranks started one per process, as systemd or Kubernetes start them: a
// worker that dies is started again by its supervisor (here a shell loop),
// and rank 0 waits for it to rejoin and serves again.
TEST(Serve, ARemoteWorkerThatItsSupervisorRestartsRejoins) {
  ProcessGroup group(testing::make_temp_dir());
  const std::string master = "127.0.0.1:" + std::to_string(testing::free_port());
  const std::map<std::string, std::string> env = {{"TANDEM_CLUSTER_TOKEN", "rejoin-test"}};
  Server server(group,
                {"--tp", "2", "--rank", "0", "--world-size", "2", "--master", master,
                 "--heartbeat-timeout", "3"},
                env);
  const std::string worker = std::string("'") + TANDEM_BINARY + "' serve --model " + kModel +
                             " --threads 1 --tp 2 --rank 1 --world-size 2 --master " + master;
  // Restarts the worker until it exits 0, as systemd's Restart=on-failure
  // does. A worker that starts before rank 0 has noticed the loss finds the
  // old cluster, fails, and is started again.
  const int supervisor = group.spawn(
      {"/bin/sh", "-c", "until " + worker + "; do sleep 0.5; done"}, env, "supervisor");
  ASSERT_TRUE(server.connect()) << group.describe();
  ASSERT_TRUE(server.wait_health(HealthCheckResponse::SERVING, milliseconds(30000)))
      << group.describe();
  const pid_t first = server.status().ranks(1).pid();
  ASSERT_GT(first, 0);
  ::kill(first, SIGKILL);

  const v1::ClusterStatus status = server.wait_serving_after_restarts(1, milliseconds(30000));
  ASSERT_EQ(status.state(), v1::SERVING_STATE_SERVING) << group.describe();
  EXPECT_EQ(status.layout().launch(), "env");
  ASSERT_EQ(status.ranks_size(), 2);
  EXPECT_NE(status.ranks(1).pid(), first);
  const Streamed after = server.generate(greedy(kPrompt, 4));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message() << group.describe();

  ::kill(server.pid(), SIGTERM);
  ASSERT_TRUE(group.wait_all(milliseconds(20000))) << group.describe();
  EXPECT_TRUE(group.exited_ok(server.index())) << group.describe();
  EXPECT_TRUE(group.exited_ok(supervisor)) << group.describe();
}

TEST(Serve, SigkillOfRankZeroLeavesNoWorker) {
  // Orphans are re-parented to this process, so the worker's exit code can be read.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  ProcessGroup group(testing::make_temp_dir());
  Server server(group, {"--local-ranks", "2"});
  ASSERT_TRUE(server.connect()) << group.describe();
  ASSERT_TRUE(server.wait_health(HealthCheckResponse::SERVING, milliseconds(30000)))
      << group.describe();
  const pid_t worker = server.status().ranks(1).pid();
  ASSERT_GT(worker, 0);
  group.kill(server.index());
  ASSERT_TRUE(group.wait_all(milliseconds(5000)));
  int status = 0;
  pid_t reaped = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (reaped != worker && std::chrono::steady_clock::now() < deadline) {
    reaped = ::waitpid(worker, &status, WNOHANG);
    if (reaped != worker) std::this_thread::sleep_for(milliseconds(20));
  }
  if (reaped != worker) ::kill(worker, SIGKILL);
  ASSERT_EQ(reaped, worker) << "the worker is still running 10 s after rank 0 died";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << "status " << status;
  EXPECT_NE(group.err(server.index()).find("lost rank 0"), std::string::npos) << group.describe();
}

#ifdef TANDEM_MPIEXEC
TEST(Serve, TwoRanksUnderMpirun) {
  ProcessGroup group(testing::make_temp_dir());
  const std::string port = std::to_string(testing::free_port());
  Server server(group, {},
                {{"OMPI_ALLOW_RUN_AS_ROOT", "1"},
                 {"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"},
                 {"TANDEM_MASTER_ADDR", "127.0.0.1"},
                 {"TANDEM_MASTER_PORT", port},
                 {"TANDEM_CLUSTER_TOKEN", "mpirun-test-token"}},
                {TANDEM_MPIEXEC, "--oversubscribe", "--timeout", "60", "-np", "2", "-x",
                 "TANDEM_MASTER_ADDR", "-x", "TANDEM_MASTER_PORT", "-x", "TANDEM_CLUSTER_TOKEN"});
  ASSERT_TRUE(server.connect(milliseconds(30000))) << group.describe();
  ASSERT_TRUE(server.wait_health(HealthCheckResponse::SERVING, milliseconds(30000)))
      << group.describe();
  const v1::ClusterStatus s = server.status();
  EXPECT_EQ(s.layout().launch(), "mpirun");
  ASSERT_EQ(s.ranks_size(), 2);
  EXPECT_EQ(s.ranks(1).health(), v1::RANK_HEALTH_HEALTHY);
  const Streamed streamed = server.generate(greedy(kPrompt, 16));
  EXPECT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  EXPECT_EQ(streamed.ids.size(), 16u);
  // The orchestrator's way to stop it: every rank exits 0, so mpirun does.
  // (mpirun's own SIGTERM kills the ranks after odls_base_sigkill_timeout.)
  ASSERT_TRUE(server.call_shutdown().ok());
  ASSERT_TRUE(group.wait_all(milliseconds(30000))) << group.describe();
  EXPECT_TRUE(group.exited_ok(server.index())) << group.describe();
}
#endif

TEST(Serve, TlsServerAndClient) {
  const std::string dir = testing::make_temp_dir();
  const CommandResult cert = run(
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext "
      "subjectAltName=IP:127.0.0.1,DNS:localhost -keyout " + dir + "/key.pem -out " + dir +
      "/cert.pem");
  if (cert.code != 0) {
    std::filesystem::remove_all(dir);
    GTEST_SKIP() << "openssl cannot make a test certificate: " << cert.err;
  }
  ProcessGroup group(testing::make_temp_dir());
  Server server(group, {"--tls-cert", dir + "/cert.pem", "--tls-key", dir + "/key.pem"});
  ASSERT_TRUE(server.connect()) << group.describe();
  const std::string flags = " --prompt hi --max-tokens 3 --temperature 0 --print-token-ids";
  // Polls until served: the insecure stubs of Server cannot probe a TLS port.
  CommandResult tls;
  for (int i = 0; i < 100; ++i) {
    tls = run(std::string(TANDEM_BINARY) + " generate --server " + server.address() +
              " --tls-ca " + dir + "/cert.pem" + flags);
    if (tls.code == 0 || tls.err.find("loading") == std::string::npos) break;
    std::this_thread::sleep_for(milliseconds(50));
  }
  EXPECT_EQ(tls.code, 0) << tls.err;
  EXPECT_EQ(tls.out.empty(), false);
  // A plaintext client cannot talk to it.
  const CommandResult plain =
      run(std::string(TANDEM_BINARY) + " generate --server " + server.address() + " --timeout 5" +
          flags);
  EXPECT_NE(plain.code, 0);
  std::filesystem::remove_all(dir);
}

TEST(Serve, PythonClientExample) {
  if (run("/usr/bin/python3 -c 'import grpc, google.protobuf'").code != 0) {
    GTEST_SKIP() << "Debian's python3-grpcio and python3-protobuf are not installed";
  }
  ProcessGroup group(testing::make_temp_dir());
  Server server(group, {});
  ASSERT_TRUE(server.connect()) << group.describe();
  ASSERT_TRUE(server.wait_health(HealthCheckResponse::SERVING, milliseconds(20000)));
  const std::string python = std::string("env PYTHONPATH=") + TANDEM_PROTO_PYTHON_DIR +
                             " /usr/bin/python3 " + TANDEM_PYTHON_CLIENT + " --server " +
                             server.address();
  const CommandResult health = run(python + " health");
  EXPECT_EQ(health.code, 0) << health.err;
  EXPECT_EQ(health.out, "SERVING\n");
  const CommandResult generated = run(python + " generate --prompt '" + kPrompt +
                                      "' --temperature 0 --max-tokens 12 --ignore-eos "
                                      "--print-token-ids");
  ASSERT_EQ(generated.code, 0) << generated.err;
  const Streamed s = server.generate(greedy(kPrompt, 12));
  std::string ids;
  for (int32_t id : s.ids) ids += (ids.empty() ? "" : " ") + std::to_string(id);
  EXPECT_EQ(generated.out, s.text + "\n" + ids + "\n");
  EXPECT_NE(generated.err.find("FINISH_REASON_LENGTH"), std::string::npos) << generated.err;
  const CommandResult status = run(python + " status");
  EXPECT_NE(status.out.find("SERVING_STATE_SERVING"), std::string::npos) << status.out;
  EXPECT_EQ(run(python + " shutdown").code, 0);
  ASSERT_TRUE(group.wait_all(milliseconds(15000))) << group.describe();
  EXPECT_TRUE(group.exited_ok(server.index())) << group.describe();
}

}  // namespace
}  // namespace tandem
