// The descriptor a File opened from disk keeps for its ranged tensor reads.
// Shared between copies of the File; closed when the last copy goes away.
#pragma once

#include <unistd.h>

#include "runtime/gguf/gguf.h"

namespace tandem::gguf {

struct File::Fd {
  explicit Fd(int fd) : fd(fd) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int fd;
};

}  // namespace tandem::gguf
