// Model-loading progress: a bar redrawn in place on a terminal, a plain log
// line at every quarter elsewhere (journald, kubectl logs, CI). The engine
// reads its weights with ordinary reads, so the bytes this process has read
// (/proc/self/io rchar) against the file's size measure its progress without
// a hook inside the loader; with --mmap nothing is read and only the start
// and the end are shown.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>

namespace tandem::launcher {

class LoadProgress {
 public:
  // Starts reporting on `out` (a bar when it is a terminal).
  LoadProgress(std::string label, uint64_t total_bytes, std::FILE* out = stderr);
  // Stops reporting (as if finish(false) when finish was not called).
  ~LoadProgress();
  LoadProgress(const LoadProgress&) = delete;
  LoadProgress& operator=(const LoadProgress&) = delete;

  void finish(bool ok, double seconds);

 private:
  void run();
  uint64_t read_so_far() const;
  void draw(uint64_t done, bool final);

  std::string label_;
  uint64_t total_;
  std::FILE* out_;
  bool tty_;
  uint64_t start_rchar_;
  int logged_quarter_ = 0;
  std::atomic<bool> stop_{false};
  bool finished_ = false;
  std::thread thread_;
};

}  // namespace tandem::launcher
