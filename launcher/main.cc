// tandem: one binary, one subcommand per job.
#include <cstdio>

#include "CLI/CLI.hpp"
#include "launcher/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"Tandem: serves large language models across linked boxes", "tandem"};
  app.require_subcommand(1);
  int exit_code = 0;
  tandem::launcher::add_generate_command(app, &exit_code);
  tandem::launcher::add_tokenize_command(app, &exit_code);
  tandem::launcher::add_model_info_command(app, &exit_code);
  tandem::launcher::add_make_test_model_command(app, &exit_code);
  tandem::launcher::add_bench_command(app, &exit_code);
  tandem::launcher::add_serve_command(app, &exit_code);
  tandem::launcher::add_plan_command(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "tandem: %s (see tandem --help)\n", e.what());
    return 2;
  }
  return exit_code;
}
