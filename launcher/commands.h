// The `tandem` binary's subcommands. Each registers its flags on the shared
// CLI11 app and, when chosen, runs and stores its exit code.
#pragma once

#include <functional>
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
void add_serve_command(CLI::App& app, int* exit_code);
void add_plan_command(CLI::App& app, int* exit_code);

// `tandem bench transport` (bench_transport.cc) shares the bench subcommand:
// its flags are registered on it; run(json) runs the sweep and returns the
// exit code; any_flag_given() lets the other modes refuse its flags.
struct BenchTransportHooks {
  std::function<int(bool json)> run;
  std::function<bool()> any_flag_given;
};
BenchTransportHooks add_bench_transport_options(CLI::App& bench);

// Prints "tandem COMMAND: message" on one line of stderr and returns the exit
// code: 2 for bad input (flags, files, requests), 1 for internal failures.
int report_error(std::string_view command, const absl::Status& status);

}  // namespace tandem::launcher
