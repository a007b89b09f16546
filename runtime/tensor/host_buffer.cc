#include "runtime/tensor/host_buffer.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif

namespace tandem {

absl::StatusOr<HostBuffer> HostBuffer::Allocate(size_t bytes) {
  HostBuffer b;
  if (bytes == 0) return b;
  const size_t page = 4096;
  const size_t mapped = (bytes + page - 1) / page * page;
  void* p = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot map ", bytes, " bytes of host memory: ", std::strerror(errno)));
  }
  // Both hints are best effort: without huge pages or MADV_POPULATE_WRITE
  // (older kernels) the memory still works, it just faults in page by page.
  madvise(p, mapped, MADV_HUGEPAGE);
  if (madvise(p, mapped, MADV_POPULATE_WRITE) != 0 && errno == ENOMEM) {
    munmap(p, mapped);
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot populate ", bytes, " bytes of host memory"));
  }
  b.data_ = static_cast<uint8_t*>(p);
  b.size_ = bytes;
  b.mapped_ = mapped;
  return b;
}

HostBuffer::HostBuffer(HostBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      mapped_(std::exchange(other.mapped_, 0)) {}

HostBuffer& HostBuffer::operator=(HostBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) munmap(data_, mapped_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    mapped_ = std::exchange(other.mapped_, 0);
  }
  return *this;
}

HostBuffer::~HostBuffer() {
  if (data_ != nullptr) munmap(data_, mapped_);
}

}  // namespace tandem
