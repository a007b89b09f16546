#include "runtime/gguf/byte_source.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "runtime/gguf/format.h"

namespace tandem::gguf {
namespace {

// Large enough that the 16 MB Llama 3 vocabulary takes 16 reads.
constexpr size_t kBufferSize = size_t{1} << 20;
// pread() on Linux transfers at most about 2 GiB per call.
constexpr uint64_t kMaxPread = uint64_t{1} << 30;

}  // namespace

ByteSource::ByteSource(std::span<const uint8_t> bytes)
    : size_(bytes.size()), cur_(bytes.data()), end_(bytes.data() + bytes.size()) {}

ByteSource::ByteSource(int fd, uint64_t size, std::string name)
    : fd_(fd), size_(size), name_(std::move(name)) {}

absl::Status ByteSource::read_slow(void* dst, size_t n) {
  if (n > remaining()) {
    return absl::OutOfRangeError(format::cat(name_, ": read of ", n, " bytes past end of file (",
                                             size_, " bytes) at offset ", pos_));
  }
  // Memory mode never gets here: [cur_, end_) covers everything up to size_.
  auto* out = static_cast<uint8_t*>(dst);
  size_t buffered = static_cast<size_t>(end_ - cur_);
  if (buffered != 0) std::memcpy(out, cur_, buffered);
  out += buffered;
  n -= buffered;
  pos_ += buffered;
  cur_ = end_;
  if (n >= kBufferSize) {
    // Large reads (a long string) go straight to the destination.
    absl::Status st = pread_exact(fd_, out, n, pos_, name_);
    if (!st.ok()) return st;
    pos_ += n;
    return absl::OkStatus();
  }
  buffer_.resize(kBufferSize);
  size_t chunk = static_cast<size_t>(std::min<uint64_t>(kBufferSize, remaining()));
  absl::Status st = pread_exact(fd_, buffer_.data(), chunk, pos_, name_);
  if (!st.ok()) return st;
  cur_ = buffer_.data();
  end_ = cur_ + chunk;
  std::memcpy(out, cur_, n);
  cur_ += n;
  pos_ += n;
  return absl::OkStatus();
}

absl::Status pread_exact(int fd, void* dst, uint64_t n, uint64_t offset, const std::string& name) {
  auto* out = static_cast<uint8_t*>(dst);
  while (n > 0) {
    size_t want = static_cast<size_t>(std::min(n, kMaxPread));
    ssize_t got = ::pread(fd, out, want, static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      return absl::ErrnoToStatus(
          err, format::cat(name, ": read of ", want, " bytes failed at offset ", offset));
    }
    if (got == 0) {
      return absl::DataLossError(
          format::cat(name, ": file ended early (truncated while open?) at offset ", offset));
    }
    out += got;
    n -= static_cast<uint64_t>(got);
    offset += static_cast<uint64_t>(got);
  }
  return absl::OkStatus();
}

}  // namespace tandem::gguf
