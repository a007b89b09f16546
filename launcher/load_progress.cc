#include "launcher/load_progress.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>

namespace tandem::launcher {
namespace {

uint64_t process_rchar() {
  std::ifstream in("/proc/self/io");
  std::string key;
  uint64_t value = 0;
  while (in >> key >> value) {
    if (key == "rchar:") return value;
  }
  return 0;
}

}  // namespace

LoadProgress::LoadProgress(std::string label, uint64_t total_bytes, std::FILE* out)
    : label_(std::move(label)),
      total_(std::max<uint64_t>(total_bytes, 1)),
      out_(out),
      tty_(::isatty(::fileno(out)) == 1),
      start_rchar_(process_rchar()) {
  if (!tty_) std::fprintf(out_, "loading %s (%.1f MB)\n", label_.c_str(), total_ / 1e6);
  thread_ = std::thread([this] { run(); });
}

LoadProgress::~LoadProgress() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (!finished_ && tty_) std::fputc('\n', out_);
}

uint64_t LoadProgress::read_so_far() const {
  return std::min(process_rchar() - start_rchar_, total_);
}

void LoadProgress::draw(uint64_t done, bool final) {
  const double fraction = static_cast<double>(done) / static_cast<double>(total_);
  if (tty_) {
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(fraction * kWidth);
    std::string bar(static_cast<size_t>(filled), '=');
    if (filled < kWidth) bar += '>';
    bar.resize(kWidth, ' ');
    std::fprintf(out_, "\rloading %s [%s] %3d%% %.0f/%.0f MB%s", label_.c_str(), bar.c_str(),
                 static_cast<int>(fraction * 100), done / 1e6, total_ / 1e6, final ? "" : " ");
    std::fflush(out_);
    return;
  }
  const int quarter = static_cast<int>(fraction * 4);
  if (quarter > logged_quarter_ && quarter < 4) {
    logged_quarter_ = quarter;
    std::fprintf(out_, "loading %s: %d%% (%.0f of %.0f MB)\n", label_.c_str(), quarter * 25,
                 done / 1e6, total_ / 1e6);
    std::fflush(out_);
  }
}

void LoadProgress::run() {
  while (!stop_) {
    draw(read_so_far(), false);
    for (int i = 0; i < 10 && !stop_; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

void LoadProgress::finish(bool ok, double seconds) {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  finished_ = true;
  if (tty_) {
    if (ok) draw(total_, true);
    std::fprintf(out_, ok ? " done in %.1f s\n" : " failed after %.1f s\n", seconds);
  } else {
    std::fprintf(out_, ok ? "loaded %s in %.1f s\n" : "loading %s failed after %.1f s\n",
                 label_.c_str(), seconds);
  }
  std::fflush(out_);
}

}  // namespace tandem::launcher
