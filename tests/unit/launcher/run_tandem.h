// Runs the real tandem binary (TANDEM_BINARY) the way a user would, for the
// launcher's tests: through a shell, bounded by coreutils' timeout so that a
// hang fails the test instead of stalling it.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace tandem::testing {

struct RunResult {
  int code = -1;
  std::string out;
  std::string err;
};

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// `ENV LAUNCHER tandem ARGS` (LAUNCHER: mpirun and its flags, or empty);
// the caller single-quotes arguments where needed.
inline RunResult run_tandem_under(const std::string& launcher, const std::string& args,
                                  const std::string& env = "") {
  static int n = 0;
  const std::filesystem::path dir = std::filesystem::temp_directory_path();
  const std::string id = std::to_string(getpid()) + "-" + std::to_string(n++);
  const std::filesystem::path out = dir / ("tandem-run-out-" + id);
  const std::filesystem::path err = dir / ("tandem-run-err-" + id);
  const std::string cmd = env + " timeout -s KILL 60 " + launcher + " " +
                          std::string(TANDEM_BINARY) + " " + args +
                          " >" + out.string() + " 2>" + err.string();
  const int status = std::system(cmd.c_str());
  RunResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

// `ENV tandem ARGS`.
inline RunResult run_tandem(const std::string& args, const std::string& env = "") {
  return run_tandem_under("", args, env);
}

inline int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

}  // namespace tandem::testing
