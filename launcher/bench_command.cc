// tandem bench decode|prefill: tokens/s in the form llama-bench users know,
// with decode speed also given as a fraction of the memory-bandwidth bound
// (the bytes each step reads, weights and KV cache, ÷ the read bandwidth
// probed next to each timed repetition).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "launcher/cluster.h"
#include "launcher/commands.h"
#include "launcher/engine_cluster.h"
#include "launcher/kv_type_flag.h"
#include "launcher/memory_bandwidth.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/engine.h"
#include "runtime/engine/kv_cache.h"

namespace tandem::launcher {
namespace {

// Prompt tokens per forward pass while bench decode fills its --decode-context.
constexpr int kDecodePrefillChunk = 512;

// The bandwidth probe's buffer: 8x a 32 MiB L3, read twice per probe (about
// 25 ms at 20 GB/s).
constexpr size_t kProbeBytes = size_t{256} << 20;

struct BenchFlags {
  std::string mode;
  std::string model;
  std::vector<int> threads = {1, 2};
  std::vector<int> prompt_tokens = {128, 512};
  int gen_tokens = 64;
  int decode_context = 0;  // positions in the cache before the timed decode steps
  DType kv_type = DType::kF16;
  int repetitions = 3;
  bool json = false;
  int tp = 1;
  int pp = 1;
  ClusterFlags cluster;
};

struct Sample {
  double mean = 0;
  double stddev = 0;
};

Sample summarize(const std::vector<double>& v) {
  Sample s;
  for (double x : v) s.mean += x;
  s.mean /= v.size();
  for (double x : v) s.stddev += (x - s.mean) * (x - s.mean);
  s.stddev = v.size() > 1 ? std::sqrt(s.stddev / (v.size() - 1)) : 0;
  return s;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int32_t argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// Seconds for one decode run of n steps after a prompt of `context` random
// tokens (prefilled untimed, in chunks of at most `chunk`) and one more.
absl::StatusOr<double> time_decode(engine::Engine& e, int n, int context, int chunk) {
  TANDEM_RETURN_IF_ERROR(e.open_sequence(0));
  int32_t token = e.tokenizer().bos_id() >= 0 ? e.tokenizer().bos_id() : 0;
  int32_t pos = 0;
  const int32_t seq = 0;
  double start = 0;
  absl::Status status;
  if (context > 0) {
    std::mt19937 rng(99);
    std::vector<int32_t> tokens(chunk), positions(chunk), seqs(chunk, 0);
    while (pos < context && status.ok()) {
      const int m = std::min(chunk, context - pos);
      for (int i = 0; i < m; ++i) {
        tokens[i] = static_cast<int32_t>(rng() % e.config().n_vocab);
        positions[i] = pos + i;
      }
      auto logits = e.forward({std::span(tokens.data(), m), std::span(positions.data(), m),
                               std::span(seqs.data(), m), {}});
      if (!logits.ok()) status = logits.status();
      pos += m;
    }
  }
  for (int i = 0; i <= n && status.ok(); ++i) {
    if (i == 1) start = now_seconds();  // the prompt step is not a decode step
    auto logits = e.forward({std::span(&token, 1), std::span(&pos, 1), std::span(&seq, 1), {}});
    if (!logits.ok()) status = logits.status();
    else token = argmax(*logits);
    ++pos;
  }
  TANDEM_RETURN_IF_ERROR(e.close_sequence(0));
  TANDEM_RETURN_IF_ERROR(status);
  return now_seconds() - start;
}

absl::StatusOr<double> time_prefill(engine::Engine& e, int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> tokens(n), positions(n), seqs(n, 0);
  for (int i = 0; i < n; ++i) {
    tokens[i] = static_cast<int32_t>(rng() % e.config().n_vocab);
    positions[i] = i;
  }
  TANDEM_RETURN_IF_ERROR(e.open_sequence(0));
  const double start = now_seconds();
  auto logits = e.forward({tokens, positions, seqs, {}});
  const double seconds = now_seconds() - start;
  TANDEM_RETURN_IF_ERROR(e.close_sequence(0));
  TANDEM_RETURN_IF_ERROR(logits.status());
  return seconds;
}

// Bytes of weights that one decode step reads over all ranks: every matrix
// and norm, but only one row of the token embedding (unless it doubles as
// the output head).
uint64_t bytes_per_token(const engine::Engine& e) {
  const model::LlamaConfig& c = e.config();
  uint64_t all = 0;
  for (const gguf::TensorInfo& t : e.file().tensors()) all += t.n_bytes;
  const auto& w = *e.file().find_tensor("token_embd.weight");
  const bool tied = e.file().find_tensor("output.weight") == nullptr;
  return all - (tied ? 0 : w.n_bytes - w.n_bytes / c.n_vocab);
}

// KV-cache bytes that attention reads per decode step, averaged over the
// timed steps: keys and values of every layer for the positions before it
// (context + 1 ... context + n). Negligible at a short context, 8% of a
// 1b Q4_0 step at 2048 positions with an f16 cache.
uint64_t kv_bytes_per_token(const engine::Engine& e, DType kv_type, int context, int n) {
  const model::LlamaConfig& c = e.config();
  const double positions = context + (n + 1) / 2.0;
  const double per_position =
      static_cast<double>(c.n_layers * c.kv_dim() * 2 * engine::kv_element_bytes(kv_type));
  return static_cast<uint64_t>(positions * per_position);
}

// One engine's rows (rank 0 of a cluster): each test, its runs paired with
// read-bandwidth probes that use the same threads.
int bench_engine(const BenchFlags& f, engine::Engine& e, int t, bool decode, nlohmann::json& rows) {
  // Every rank reads its share at once: the bound assumes all of them on
  // this box, with their threads together.
  const int ranks = e.world().size();
  auto probe = ReadProbe::Create(kProbeBytes);
  if (!probe.ok()) return report_error("bench", probe.status());
  auto read_bandwidth = [&] { return probe->measure(t * ranks, 2); };
  const std::string layout = absl::StrCat("tp", e.world().tp(), " pp", e.world().pp());
  const uint64_t per_token = bytes_per_token(e);
  const std::string name = e.file().get_string("general.name").value_or(f.model);
  // llama.cpp's mixes by their file type; otherwise the matrices' type.
  const uint32_t file_type = e.file().get_u32("general.file_type").value_or(0);
  const std::string type =
      file_type == 15   ? "q4_k_m"
      : file_type == 17 ? "q5_k_m"
                        : dtype_name(e.file().find_tensor("blk.0.ffn_up.weight")->type);
  const std::vector<int> tests = decode ? std::vector<int>{f.gen_tokens} : f.prompt_tokens;
  for (int n : tests) {
    // Decode reads the weights and the KV cache: the bound counts both.
    const uint64_t kv_bytes = decode ? kv_bytes_per_token(e, f.kv_type, f.decode_context, n) : 0;
    const double step_bytes = static_cast<double>(per_token + kv_bytes);
    std::vector<double> speeds, bandwidths, fractions;
    double sync = 0;  // seconds rank 0 spent in exchanges during the timed runs
    double probe_before = 0;
    // One untimed warm-up run, then the repetitions, each paired with the
    // mean of the bandwidth probes taken just before and just after it.
    for (int r = 0; r <= f.repetitions; ++r) {
      if (r == 1) probe_before = read_bandwidth();
      const double sync_before = e.sync_seconds();
      auto s = decode ? time_decode(e, n, f.decode_context, kDecodePrefillChunk)
                      : time_prefill(e, n, 1234 + r);
      if (!s.ok()) return report_error("bench", s.status());
      if (r > 0) {
        sync += e.sync_seconds() - sync_before;
        const double probe_after = read_bandwidth();
        speeds.push_back(n / *s);
        bandwidths.push_back((probe_before + probe_after) / 2);
        fractions.push_back(speeds.back() * step_bytes / bandwidths.back());
        probe_before = probe_after;
      }
    }
    const double sync_us_per_token = sync / (static_cast<double>(n) * f.repetitions) * 1e6;
    const Sample s = summarize(speeds);
    const double bandwidth = summarize(bandwidths).mean;
    const double bound = bandwidth / step_bytes;
    const double fraction = summarize(fractions).mean;
    std::string test = decode ? absl::StrCat("tg", n) : absl::StrCat("pp", n);
    if (decode && f.decode_context > 0) absl::StrAppend(&test, " @ d", f.decode_context);
    nlohmann::json row = {{"model", name}, {"size_bytes", per_token}, {"type", type},
                          {"threads", t}, {"tp", e.world().tp()}, {"pp", e.world().pp()},
                          {"test", test}, {"tokens_per_s", s.mean},
                          {"stddev", s.stddev}, {"read_gb_per_s", bandwidth / 1e9},
                          {"isa", std::string(kernels::isa_name(kernels::best_isa()))}};
    row["kv_type"] = dtype_name(f.kv_type);
    if (e.distributed()) row["sync_us_per_token"] = sync_us_per_token;
    if (decode) {
      row["kv_bytes_per_token"] = kv_bytes;
      row["bound_tokens_per_s"] = bound;
      row["fraction_of_bound"] = fraction;
    }
    rows.push_back(row);
    if (!f.json) {
      std::printf("| %s | %.2f GB | %s | %s | %d | %s | %.2f ± %.2f | %s | %s | %.1f | %s |\n",
                  name.c_str(), per_token / 1e9, type.c_str(), layout.c_str(), t, test.c_str(),
                  s.mean, s.stddev,
                  decode ? absl::StrCat(std::lround(bound * 100) / 100.0).c_str() : "-",
                  decode ? absl::StrCat(std::lround(fraction * 1000) / 10.0, "%").c_str() : "-",
                  bandwidth / 1e9,
                  e.distributed() ? absl::StrCat(std::lround(sync_us_per_token)).c_str() : "-");
      std::fflush(stdout);
    }
  }
  return 0;
}

int run_bench(const BenchFlags& f) {
  if (f.mode != "decode" && f.mode != "prefill") {
    return report_error("bench", absl::InvalidArgumentError(absl::StrCat(
                                     "unknown benchmark '", f.mode,
                                     "' (decode, prefill or transport)")));
  }
  if (f.model.empty()) {
    return report_error("bench", absl::InvalidArgumentError(
                                     absl::StrCat("--model is required for ", f.mode)));
  }
  const bool decode = f.mode == "decode";
  const int max_prompt = *std::max_element(f.prompt_tokens.begin(), f.prompt_tokens.end());
  nlohmann::json rows = nlohmann::json::array();
  const int layout_ranks = f.tp * f.pp;
  auto joined = Cluster::Join(f.cluster, layout_ranks > 1 ? layout_ranks : 0);
  if (!joined.ok()) return report_error("bench", joined.status());
  Cluster& cluster = **joined;
  if (!f.json && cluster.rank() == 0) {
    std::printf(
        "| model | size | type | layout | threads | test | t/s | bound t/s | of bound | GB/s read | sync us/token |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
  }
  for (int t : f.threads) {
    engine::EngineOptions options;
    options.model_path = f.model;
    options.n_threads = t;
    options.context_length = (decode ? f.decode_context + f.gen_tokens + 1 : max_prompt) + 1;
    options.max_batch_tokens =
        decode ? std::max(1, std::min(f.decode_context, kDecodePrefillChunk)) : max_prompt;
    options.kv_type = f.kv_type;
    options.tp = f.tp;
    options.pp = f.pp;
    const int code = run_engine_cluster("bench", cluster, options, [&](engine::Engine& e) {
      return bench_engine(f, e, t, decode, rows);
    });
    if (code != 0) return code;
  }
  if (absl::Status s = cluster.wait_workers(std::chrono::seconds(30)); !s.ok()) {
    return report_error("bench", s);
  }
  if (cluster.rank() != 0) return 0;
  if (f.json) std::printf("%s\n", rows.dump(2).c_str());
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<BenchFlags>();
  CLI::App* cmd = app.add_subcommand(
      "bench", "Measure decode or prefill speed of a model, or the transport's links");
  cmd->add_option("mode", flags->mode, "decode | prefill | transport")->required();
  cmd->add_option("--model", flags->model, "GGUF model file");
  cmd->add_option("--threads", flags->threads, "Thread counts, e.g. 1,2")->delimiter(',')
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--prompt-tokens", flags->prompt_tokens, "Prompt lengths for prefill, e.g. 128,512")
      ->delimiter(',')->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--gen-tokens", flags->gen_tokens, "Decode steps")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--decode-context", flags->decode_context,
                  "decode: positions already in the KV cache when the timed steps start")
      ->check(CLI::Range(0, 1 << 20));
  add_kv_type_option(*cmd, &flags->kv_type);
  cmd->add_option("--repetitions", flags->repetitions, "Timed runs per test")->check(CLI::Range(1, 1000));
  cmd->add_flag("--json", flags->json, "Print JSON rows instead of a table");
  cmd->add_option("--tp", flags->tp, "decode/prefill: tensor-parallel ranks")->check(CLI::Range(1, 64));
  cmd->add_option("--pp", flags->pp, "decode/prefill: pipeline stages")->check(CLI::Range(1, 64));
  add_cluster_flags(*cmd, flags->cluster, /*with_local_ranks=*/false);
  BenchTransportHooks transport = add_bench_transport_options(*cmd);
  cmd->callback([flags, exit_code, transport, cmd] {
    // One subcommand, two sets of flags: refuse those of the other mode
    // rather than ignore them silently.
    if (flags->mode == "transport") {
      for (const char* name : {"--model", "--threads", "--prompt-tokens", "--gen-tokens",
                               "--repetitions", "--decode-context", "--kv-type"}) {
        if (cmd->count(name) > 0) {
          *exit_code = report_error(
              "bench", absl::InvalidArgumentError(absl::StrCat(
                           name, " applies to bench decode and prefill, not transport")));
          return;
        }
      }
      *exit_code = transport.run(flags->json);
      return;
    }
    if (transport.any_flag_given()) {
      *exit_code = report_error(
          "bench", absl::InvalidArgumentError(
                       "--backend, --op, --dtype and the other transport flags apply to bench "
                       "transport only"));
      return;
    }
    *exit_code = run_bench(*flags);
  });
}

}  // namespace tandem::launcher
