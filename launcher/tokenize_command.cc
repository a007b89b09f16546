// tandem tokenize: print a text's token ids with the model's own tokenizer.
#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_join.h"
#include "launcher/commands.h"
#include "runtime/gguf/gguf.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tandem::launcher {
namespace {

struct TokenizeFlags {
  std::string model;
  std::string text;
  bool no_bos = false;
  bool parse_special = false;
};

int run_tokenize(const TokenizeFlags& f) {
  auto file = gguf::File::Open(f.model);
  if (!file.ok()) return report_error("tokenize", file.status());
  auto tok = tokenizer::Tokenizer::FromGguf(*file);
  if (!tok.ok()) return report_error("tokenize", tok.status());
  const std::vector<int32_t> ids =
      (*tok)->encode(f.text, {.add_bos = !f.no_bos, .parse_special = f.parse_special});
  std::printf("%s\n", absl::StrJoin(ids, " ").c_str());
  return 0;
}

}  // namespace

void add_tokenize_command(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<TokenizeFlags>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of a text");
  cmd->add_option("--model", flags->model, "GGUF model or vocabulary file")->required();
  cmd->add_option("--text", flags->text, "Text to tokenize")->required();
  cmd->add_flag("--no-bos", flags->no_bos, "Do not add the BOS token");
  cmd->add_flag("--parse-special", flags->parse_special, "Turn special-token text into its token");
  cmd->callback([flags, exit_code] { *exit_code = run_tokenize(*flags); });
}

}  // namespace tandem::launcher
