// Sequential reads of a GGUF header from either an in-memory image or a file
// descriptor. File reads are buffered in large chunks so that a vocabulary of
// hundreds of thousands of short strings costs a handful of syscalls; only the
// bytes actually parsed are read (never the tensor data).
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace tandem::gguf {

class ByteSource {
 public:
  // Reads from `bytes`, which must outlive the source.
  explicit ByteSource(std::span<const uint8_t> bytes);
  // Reads the first `size` bytes of `fd` with pread(); the fd stays owned by the caller.
  ByteSource(int fd, uint64_t size, std::string name);

  uint64_t pos() const { return pos_; }
  uint64_t size() const { return size_; }
  uint64_t remaining() const { return size_ - pos_; }

  // Copies the next n bytes into dst. Callers check remaining() first so that a
  // truncated file gets a precise message; an error here is an I/O failure.
  absl::Status read(void* dst, size_t n) {
    if (n <= static_cast<size_t>(end_ - cur_)) {
      if (n != 0) std::memcpy(dst, cur_, n);
      cur_ += n;
      pos_ += n;
      return absl::OkStatus();
    }
    return read_slow(dst, n);
  }

 private:
  absl::Status read_slow(void* dst, size_t n);

  int fd_ = -1;  // -1: memory mode, [cur_, end_) is the whole rest of the image
  uint64_t size_ = 0;
  uint64_t pos_ = 0;
  std::string name_;
  std::vector<uint8_t> buffer_;
  const uint8_t* cur_ = nullptr;
  const uint8_t* end_ = nullptr;
};

// pread() of exactly n bytes at offset, retrying on EINTR and short reads.
// Returns an error naming `name` on failure or when the file ends early.
absl::Status pread_exact(int fd, void* dst, uint64_t n, uint64_t offset, const std::string& name);

}  // namespace tandem::gguf
