// tandem generate: load a model, stream a completion of a prompt to stdout,
// and report load, prompt and decode speed on stderr.
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "launcher/cluster.h"
#include "launcher/commands.h"
#include "launcher/serve/remote_generate.h"
#include "launcher/engine_cluster.h"
#include "launcher/kv_type_flag.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/generate.h"

namespace tandem::launcher {
namespace {

struct GenerateFlags {
  engine::EngineOptions engine;
  std::string prompt;
  int32_t max_tokens = 128;
  engine::SamplingParams sampling;
  int64_t seed = -1;
  bool print_token_ids = false;
  bool ignore_eos = false;
  bool no_bos = false;
  std::string logits_out;
  // --server: generate on a `tandem serve` instead of a local model.
  serve::RemoteGenerateOptions remote;
  ClusterFlags cluster;
};

absl::Status write_floats(const std::string& path, const std::vector<float>& values) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::NotFoundError(absl::StrCat("--logits-out: cannot create ", path));
  out.write(reinterpret_cast<const char*>(values.data()),
            static_cast<std::streamsize>(values.size() * sizeof(float)));
  if (!out) return absl::DataLossError(absl::StrCat("--logits-out: cannot write ", path));
  return absl::OkStatus();
}

int run_remote(GenerateFlags& f, const CLI::App& cmd) {
  for (const char* local_only : {"--model", "--threads", "--context", "--batch", "--mmap",
                                 "--kv-type",
                                 "--logits-out", "--tp", "--pp", "--local-ranks", "--rank",
                                 "--world-size", "--master", "--transport"}) {
    if (cmd.count(local_only) > 0) {
      return report_error("generate", absl::InvalidArgumentError(absl::StrCat(
                                          local_only, " is for a local model: it does not go with "
                                          "--server (the server was started with its own)")));
    }
  }
  serve::RemoteGenerateOptions& r = f.remote;
  r.prompt = f.prompt;
  r.max_tokens = f.max_tokens;
  r.sampling = f.sampling;
  r.seed_given = f.seed >= 0;
  if (r.seed_given) r.sampling.seed = static_cast<uint64_t>(f.seed);
  r.print_token_ids = f.print_token_ids;
  r.ignore_eos = f.ignore_eos;
  r.no_bos = f.no_bos;
  return serve::run_remote_generate(r);
}

int generate_on_rank0(GenerateFlags& f, const Cluster& cluster, engine::Engine& e) {
  if (cluster.size() > 1) {
    std::fprintf(stderr, "cluster: %s; layout tp %d x pp %d\n", cluster.description().c_str(),
                 e.world().tp(), e.world().pp());
  }
  const model::LoadStats& load = e.load_stats();
  std::fprintf(stderr, "load: %.2f s; weights %.1f MB in %.2f s (%.2f GB/s)%s; %d threads\n",
               e.load_seconds(), load.bytes / 1e6, load.seconds,
               load.seconds > 0 ? load.bytes / load.seconds / 1e9 : 0.0,
               f.engine.use_mmap ? " mapped" : "", e.n_threads());

  engine::GenerateRequest request;
  request.prompt = e.tokenizer().encode(f.prompt, {.add_bos = !f.no_bos});
  request.max_tokens = f.max_tokens;
  request.sampling = f.sampling;
  request.stop_at_eog = !f.ignore_eos;
  std::vector<float> logits;
  if (!f.logits_out.empty()) request.logits_out = &logits;

  tokenizer::StreamDecoder decoder(e.tokenizer());
  auto result = engine::generate(e, request, [&](int32_t token) {
    const std::string text = decoder.push(token);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    return true;
  });
  if (!result.ok()) return report_error("generate", result.status());
  const std::string rest = decoder.flush();
  std::fwrite(rest.data(), 1, rest.size(), stdout);
  std::fputc('\n', stdout);
  if (f.print_token_ids) {
    std::string ids;
    for (int32_t id : result->tokens) absl::StrAppend(&ids, ids.empty() ? "" : " ", id);
    std::printf("%s\n", ids.c_str());
  }
  std::fflush(stdout);
  if (!f.logits_out.empty()) {
    if (absl::Status s = write_floats(f.logits_out, logits); !s.ok()) return report_error("generate", s);
  }
  const double n_gen = static_cast<double>(result->tokens.size());
  std::fprintf(stderr, "prompt: %lld tokens in %.3f s (%.1f tokens/s)\n",
               static_cast<long long>(result->prompt_tokens), result->prompt_seconds,
               result->prompt_seconds > 0 ? result->prompt_tokens / result->prompt_seconds : 0.0);
  // The first token comes from the prompt's logits, so decode speed counts the steps after it.
  const double steps = n_gen > 1 ? n_gen - 1 : 0;
  std::fprintf(stderr, "decode: %.0f tokens in %.3f s (%.2f tokens/s); finish: %s; seed %lld\n",
               n_gen, result->decode_seconds,
               result->decode_seconds > 0 ? steps / result->decode_seconds : 0.0,
               std::string(engine::finish_reason_name(result->finish)).c_str(),
               static_cast<long long>(f.seed));
  return 0;
}

int run_generate(GenerateFlags& f) {
  if (f.seed < 0) f.seed = static_cast<int64_t>(std::random_device{}() & 0x7fffffff);
  f.sampling.seed = static_cast<uint64_t>(f.seed);
  if (absl::Status s = engine::validate(f.sampling); !s.ok()) return report_error("generate", s);
  const int layout_ranks = f.engine.tp * f.engine.pp;
  auto joined = Cluster::Join(f.cluster, layout_ranks > 1 ? layout_ranks : 0);
  if (!joined.ok()) return report_error("generate", joined.status());
  Cluster& cluster = **joined;
  int code = run_engine_cluster("generate", cluster, f.engine,
                                [&](engine::Engine& e) { return generate_on_rank0(f, cluster, e); });
  if (absl::Status s = cluster.wait_workers(std::chrono::seconds(30)); !s.ok() && code == 0) {
    code = report_error("generate", s);
  }
  return code;
}

}  // namespace

void add_generate_command(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<GenerateFlags>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt with a GGUF model");
  cmd->add_option("--model", flags->engine.model_path, "GGUF model file (or --server)");
  cmd->add_option("--server", flags->remote.server,
                  "Generate on a `tandem serve` at HOST:PORT instead of a local model");
  cmd->add_option("--auth-token-file", flags->remote.auth_token_file,
                  "With --server: the bearer token the server wants");
  cmd->add_option("--tls-ca", flags->remote.tls_ca,
                  "With --server: use TLS, trusting this CA (PEM)");
  cmd->add_option("--tls-cert", flags->remote.tls_cert,
                  "With --server: client certificate (PEM) for mTLS");
  cmd->add_option("--tls-key", flags->remote.tls_key, "With --server: client key (PEM) for mTLS");
  cmd->add_option("--timeout", flags->remote.timeout_seconds,
                  "With --server: seconds the whole generation may take")
      ->check(CLI::Range(0.1, 86400.0));
  cmd->add_option("--prompt", flags->prompt, "Prompt text")->required();
  cmd->add_option("--max-tokens", flags->max_tokens, "Tokens to generate")->check(CLI::NonNegativeNumber);
  cmd->add_option("--temperature", flags->sampling.temperature, "0 = greedy");
  cmd->add_option("--top-k", flags->sampling.top_k, "Keep the k most likely tokens (0 = off)");
  cmd->add_option("--top-p", flags->sampling.top_p, "Nucleus sampling mass (1 = off)");
  cmd->add_option("--min-p", flags->sampling.min_p, "Drop tokens below min-p x the top probability");
  cmd->add_option("--repeat-penalty", flags->sampling.repeat_penalty, "1 = off");
  cmd->add_option("--repeat-last-n", flags->sampling.repeat_last_n, "Penalty window");
  cmd->add_option("--frequency-penalty", flags->sampling.frequency_penalty, "0 = off");
  cmd->add_option("--presence-penalty", flags->sampling.presence_penalty, "0 = off");
  cmd->add_option("--seed", flags->seed, "Sampling seed (default: random, printed)");
  cmd->add_option("--threads", flags->engine.n_threads, "Threads (default: one per core)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--context", flags->engine.context_length, "Context length (default: the model's)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--batch", flags->engine.max_batch_tokens, "Largest prompt chunk per forward pass")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--mmap", flags->engine.use_mmap, "Map the model file instead of reading it");
  add_kv_type_option(*cmd, &flags->engine.kv_type);
  cmd->add_flag("--print-token-ids", flags->print_token_ids, "Print the generated ids after the text");
  cmd->add_flag("--ignore-eos", flags->ignore_eos, "Do not stop at end-of-generation tokens");
  cmd->add_flag("--no-bos", flags->no_bos, "Do not add the BOS token");
  cmd->add_option("--logits-out", flags->logits_out,
                  "Write raw float32 logits [n_prompt + n_generated - 1][n_vocab]");
  cmd->add_option("--tp", flags->engine.tp, "Tensor-parallel ranks (default: the planner's layout)")->check(CLI::Range(1, 64));
  cmd->add_option("--pp", flags->engine.pp, "Pipeline stages")->check(CLI::Range(1, 64));
  add_cluster_flags(*cmd, flags->cluster);
  cmd->callback([flags, exit_code, cmd] {
    if (!flags->remote.server.empty()) {
      *exit_code = run_remote(*flags, *cmd);
      return;
    }
    for (const char* remote_only : {"--auth-token-file", "--tls-ca", "--tls-cert", "--tls-key",
                                    "--timeout"}) {
      if (cmd->count(remote_only) > 0) {
        *exit_code = report_error("generate", absl::InvalidArgumentError(absl::StrCat(
                                                  remote_only, " goes with --server")));
        return;
      }
    }
    if (flags->engine.model_path.empty()) {
      *exit_code = report_error("generate", absl::InvalidArgumentError(
                                                "give --model FILE (or --server HOST:PORT)"));
      return;
    }
    *exit_code = run_generate(*flags);
  });
}

}  // namespace tandem::launcher
