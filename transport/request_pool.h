// Recycled memory for the Request objects of one backend: the Communicator
// API hands out unique_ptr<Request>, and a class that derives from
// PooledRequestMemory<Self> reuses freed blocks of its own size instead of
// costing a heap allocation per send or receive once warm. The pool is never
// destroyed, so a request that dies during static destruction still has
// somewhere to go.
#pragma once

#include <cstddef>
#include <mutex>
#include <new>
#include <vector>

namespace tandem::transport {

template <class Self, size_t kReserve = 64>
class PooledRequestMemory {
 public:
  static void* operator new(size_t size) {
    if (size == sizeof(Self)) {
      Blocks& blocks = pool();
      std::lock_guard<std::mutex> lock(blocks.mu);
      if (!blocks.free.empty()) {
        void* block = blocks.free.back();
        blocks.free.pop_back();
        return block;
      }
    }
    return ::operator new(size);
  }
  static void operator delete(void* block, size_t size) {
    if (size != sizeof(Self)) return ::operator delete(block);
    Blocks& blocks = pool();
    std::lock_guard<std::mutex> lock(blocks.mu);
    blocks.free.push_back(block);  // within the reserve unless more were ever alive at once
  }

 private:
  struct Blocks {
    std::mutex mu;
    std::vector<void*> free;
  };
  static Blocks& pool() {
    static Blocks* blocks = [] {
      auto* b = new Blocks;
      b->free.reserve(kReserve);
      return b;
    }();
    return *blocks;
  }
};

}  // namespace tandem::transport
