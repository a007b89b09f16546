// The `tandem` binary's subcommands. Each registers its flags on the shared
// CLI11 app and, when chosen, runs and stores its exit code.
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace CLI {
class App;
}

namespace tandem::launcher {

void add_generate_command(CLI::App& app, int* exit_code);
void add_tokenize_command(CLI::App& app, int* exit_code);
void add_model_info_command(CLI::App& app, int* exit_code);
void add_make_test_model_command(CLI::App& app, int* exit_code);
void add_bench_command(CLI::App& app, int* exit_code);

// Prints "tandem COMMAND: message" on one line of stderr and returns the exit
// code: 2 for bad input (flags, files, requests), 1 for internal failures.
int report_error(std::string_view command, const absl::Status& status);

}  // namespace tandem::launcher
