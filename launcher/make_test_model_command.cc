// tandem make-test-model: a random-weight Llama GGUF with a working tokenizer,
// for tests, demos and benchmarks; or, with --header-only --like NAME, the
// header of a published model's 4-bit conversion without its data, for
// planning.
#include <chrono>
#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "launcher/commands.h"
#include "runtime/testing/header_only_model.h"
#include "runtime/testing/test_model.h"

namespace tandem::launcher {
namespace {

struct MakeTestModelFlags {
  std::string out;
  std::string type = "f32";
  testing::TestModelSpec spec;
  bool header_only = false;
  std::string like;
};

int run_header_only(const MakeTestModelFlags& f) {
  if (f.like.empty()) {
    const std::string names = absl::StrJoin(testing::header_only_model_names(), ", ");
    return report_error("make-test-model", absl::InvalidArgumentError(absl::StrCat(
                                               "--header-only needs --like (", names, ")")));
  }
  if (absl::Status s = testing::write_header_only_model(f.out, f.like); !s.ok()) {
    return report_error("make-test-model", s);
  }
  std::fprintf(stderr, "wrote %s (the header of %s, no tensor data)\n", f.out.c_str(),
               f.like.c_str());
  return 0;
}

int run_make_test_model(MakeTestModelFlags& f) {
  if (f.header_only || !f.like.empty()) {
    if (!f.header_only) {
      return report_error("make-test-model",
                          absl::InvalidArgumentError("--like writes header-only files: add "
                                                     "--header-only"));
    }
    return run_header_only(f);
  }
  if (absl::Status s = testing::parse_test_model_type(f.type, f.spec); !s.ok()) {
    return report_error("make-test-model",
                        absl::InvalidArgumentError(absl::StrCat("--type: ", s.message())));
  }
  const auto start = std::chrono::steady_clock::now();
  if (absl::Status s = testing::write_test_model(f.out, f.spec); !s.ok()) {
    return report_error("make-test-model", s);
  }
  std::fprintf(stderr, "wrote %s (%s, %s, vocab %s, seed %llu) in %.1f s\n", f.out.c_str(),
               f.spec.shape.c_str(), f.type.c_str(), f.spec.vocab.c_str(),
               static_cast<unsigned long long>(f.spec.seed),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return 0;
}

}  // namespace

void add_make_test_model_command(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<MakeTestModelFlags>();
  CLI::App* cmd = app.add_subcommand("make-test-model", "Write a random-weight Llama GGUF");
  cmd->add_option("--out", flags->out, "Output path")->required();
  cmd->add_option("--shape", flags->spec.shape, "tiny | small | 1b");
  cmd->add_option("--type", flags->type,
                  "f32 | f16 | bf16 | q8_0 | q4_0 | q4_1 | q5_0 | q4_k | q5_k | q6_k | q4_k_m | "
                  "q5_k_m");
  cmd->add_option("--vocab", flags->spec.vocab, "spm | bpe");
  cmd->add_option("--seed", flags->spec.seed, "Weight seed");
  cmd->add_flag("--tied", flags->spec.tied_embeddings, "Omit output.weight (tied embedding)");
  cmd->add_flag("--rope-freqs", flags->spec.rope_freqs, "Add a rope_freqs tensor");
  cmd->add_flag("--header-only", flags->header_only,
                "Write only the header and tensor directory (for tandem plan)");
  cmd->add_option("--like", flags->like,
                  "With --header-only: llama-3.1-405b | llama-4-maverick | qwen3-235b");
  cmd->callback([flags, exit_code] { *exit_code = run_make_test_model(*flags); });
}

}  // namespace tandem::launcher
