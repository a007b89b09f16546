// tandem model-info: what a GGUF file holds, read from its header alone.
#include <cstdio>
#include <map>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "launcher/commands.h"
#include "runtime/gguf/gguf.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tandem::launcher {
namespace {

std::string scalar_text(const gguf::Value& v) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return absl::StrCat("\"", x, "\"");
        } else if constexpr (std::is_same_v<T, gguf::Value::Array>) {
          return absl::StrCat("[", x.size(), " items]");
        } else if constexpr (std::is_same_v<T, bool>) {
          return x ? "true" : "false";
        } else if constexpr (std::is_same_v<T, uint8_t> || std::is_same_v<T, int8_t>) {
          return absl::StrCat(static_cast<int>(x));
        } else {
          return absl::StrCat(x);
        }
      },
      v.data);
}

int run_model_info(const std::string& path) {
  auto file = gguf::File::Open(path, {.allow_missing_data = true});
  if (!file.ok()) return report_error("model-info", file.status());
  auto arch = file->get_string("general.architecture");
  std::printf("file: %s (GGUF v%u, %.1f MB)\n", path.c_str(), file->version(),
              file->file_size() / 1e6);
  std::printf("architecture: %s\n", arch.ok() ? arch->c_str() : "(missing)");
  if (auto name = file->get_string("general.name"); name.ok()) std::printf("name: %s\n", name->c_str());
  if (arch.ok()) {
    std::printf("hyper-parameters:\n");
    for (const gguf::KeyValue& kv : file->metadata()) {
      if (kv.key.rfind(*arch + ".", 0) == 0) {
        std::printf("  %s = %s\n", kv.key.c_str(), scalar_text(kv.value).c_str());
      }
    }
  }
  auto tok = tokenizer::Tokenizer::FromGguf(*file);
  if (tok.ok()) {
    std::printf("tokenizer: %s%s, %d tokens, bos %d, eos %d, add_bos %s\n",
                std::string((*tok)->model()).c_str(),
                (*tok)->pre().empty() ? "" : absl::StrCat(" (", std::string((*tok)->pre()), ")").c_str(),
                (*tok)->n_vocab(), (*tok)->bos_id(), (*tok)->eos_id(),
                (*tok)->add_bos() ? "true" : "false");
  } else {
    std::printf("tokenizer: unusable: %s\n", std::string(tok.status().message()).c_str());
  }
  std::map<std::string, std::pair<int64_t, uint64_t>> by_type;
  uint64_t total = 0;
  int64_t params = 0;
  for (const gguf::TensorInfo& t : file->tensors()) {
    auto& [count, bytes] = by_type[dtype_name(t.type)];
    count += 1;
    bytes += t.n_bytes;
    total += t.n_bytes;
    params += t.n_elements();
  }
  std::printf("tensors: %zu, %.3f B parameters, %.1f MB\n", file->tensors().size(), params / 1e9,
              total / 1e6);
  for (const auto& [type, entry] : by_type) {
    std::printf("  %-8s %6lld tensors %12.1f MB\n", type.c_str(),
                static_cast<long long>(entry.first), entry.second / 1e6);
  }
  return 0;
}

}  // namespace

void add_model_info_command(CLI::App& app, int* exit_code) {
  auto path = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("model-info", "Describe a GGUF model from its header");
  cmd->add_option("path", *path, "GGUF file")->required();
  cmd->callback([path, exit_code] { *exit_code = run_model_info(*path); });
}

}  // namespace tandem::launcher
