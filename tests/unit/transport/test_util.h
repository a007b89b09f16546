// Helpers for transport tests: one thread per rank, bounded waits, typed
// buffers built from doubles.
#pragma once

#include <chrono>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "transport/collectives/reduce.h"
#include "transport/communicator.h"

namespace tandem::transport::testing {

// Generous: TSan builds on 2 shared cores are slow. Tests that check a
// deadline use their own short one.
inline Deadline test_deadline() { return deadline_in(std::chrono::seconds(60)); }

// Runs fn(comm) on one thread per communicator and joins them all.
template <typename Fn>
void run_on_ranks(std::vector<std::unique_ptr<Communicator>>& comms, Fn fn) {
  std::vector<std::thread> threads;
  threads.reserve(comms.size());
  for (auto& comm : comms) threads.emplace_back([&fn, c = comm.get()] { fn(*c); });
  for (auto& thread : threads) thread.join();
}

inline void put_value(std::byte* p, DataType type, size_t i, double v) {
  switch (type) {
    case DataType::kF32: {
      const float f = static_cast<float>(v);
      std::memcpy(p + 4 * i, &f, 4);
      return;
    }
    case DataType::kF16: {
      const uint16_t h = f32_to_f16(static_cast<float>(v));
      std::memcpy(p + 2 * i, &h, 2);
      return;
    }
    case DataType::kBF16: {
      const uint16_t h = f32_to_bf16(static_cast<float>(v));
      std::memcpy(p + 2 * i, &h, 2);
      return;
    }
    case DataType::kI32: {
      const int32_t x = static_cast<int32_t>(v);
      std::memcpy(p + 4 * i, &x, 4);
      return;
    }
    case DataType::kU8: {
      const uint8_t x = static_cast<uint8_t>(static_cast<int>(v));
      std::memcpy(p + i, &x, 1);
      return;
    }
  }
}

inline double get_value(const std::byte* p, DataType type, size_t i) {
  switch (type) {
    case DataType::kF32: {
      float f;
      std::memcpy(&f, p + 4 * i, 4);
      return f;
    }
    case DataType::kF16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return f16_to_f32(h);
    }
    case DataType::kBF16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return bf16_to_f32(h);
    }
    case DataType::kI32: {
      int32_t x;
      std::memcpy(&x, p + 4 * i, 4);
      return x;
    }
    case DataType::kU8: {
      uint8_t x;
      std::memcpy(&x, p + i, 1);
      return x;
    }
  }
  return 0;
}

}  // namespace tandem::transport::testing
