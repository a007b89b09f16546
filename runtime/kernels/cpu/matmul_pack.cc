// pack(): row-major Q8_0/Q4_0/Q4_1/Q5_0/Q4_K/Q5_K/Q6_K matrices into the 16-row groups of
// Layout::kPacked (format in matmul_kernels.h). Runs once per weight at load
// time, so it is plain scalar code.

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/status.h"
#include "runtime/kernels/cpu/matmul.h"
#include "runtime/kernels/cpu/matmul_kernels.h"

namespace tandem::kernels {
namespace {

constexpr size_t kScaleBytes = 2;

// Byte 4r + j of slab k of a packed Q5_0 block column or Q5_K sub-block at
// q (format in matmul_kernels.h): the 5-bit quants lo5 and hi5 of its low
// and high element.
void put_q5(uint8_t* q, int k, int64_t r, int j, int lo5, int hi5) {
  q[64 * k + 4 * r + j] = static_cast<uint8_t>(lo5 | ((hi5 & 7) << 5));
  q[256 + 4 * r + j] |= static_cast<uint8_t>((hi5 >> 3) << (2 * k));
}

// Packs one group of Q8_0, Q4_0, Q4_1 or Q5_0 rows from `rows` (n_valid
// row-major rows; the rest are zero) to `out`.
template <class Block>
void pack_group(const uint8_t* rows, int64_t n_valid, int64_t nb, size_t row_stride, uint8_t* out) {
  constexpr bool kMinima = std::is_same_v<Block, BlockQ4_1>;
  constexpr bool kFive = std::is_same_v<Block, BlockQ5_0>;
  constexpr size_t kScales = kMinima ? 2 : 1;
  const size_t block_bytes = internal::packed_block_bytes(
      std::is_same_v<Block, BlockQ8_0>   ? DType::kQ8_0
      : std::is_same_v<Block, BlockQ4_0> ? DType::kQ4_0
      : kMinima                          ? DType::kQ4_1
                                         : DType::kQ5_0);
  uint8_t* scales = out;
  uint8_t* quants = out + static_cast<size_t>(nb) * kPackRows * kScaleBytes * kScales;
  std::memset(out, 0, static_cast<size_t>(nb) * (kPackRows * kScaleBytes * kScales + block_bytes));
  for (int64_t i = 0; i < n_valid; ++i) {
    const auto* row = reinterpret_cast<const Block*>(rows + i * row_stride);
    for (int64_t b = 0; b < nb; ++b) {
      std::memcpy(scales + (b * kPackRows + i) * kScaleBytes, &row[b].d, kScaleBytes);
      if constexpr (kMinima) {
        std::memcpy(scales + ((nb + b) * kPackRows + i) * kScaleBytes, &row[b].m, kScaleBytes);
      }
      uint8_t* q = quants + b * block_bytes;
      if constexpr (kFive) {
        uint32_t qh;
        std::memcpy(&qh, row[b].qh, sizeof(qh));
        for (int k = 0; k < 4; ++k) {
          for (int j = 0; j < 4; ++j) {
            const int e = 4 * k + j;
            const int lo5 = (row[b].qs[e] & 0x0F) | static_cast<int>(((qh >> e) & 1) << 4);
            const int hi5 = (row[b].qs[e] >> 4) | static_cast<int>(((qh >> (16 + e)) & 1) << 4);
            put_q5(q, k, i, j, lo5, hi5);
          }
        }
      } else {
        constexpr int kSlabs = sizeof(Block::qs) / 4;
        for (int k = 0; k < kSlabs; ++k) std::memcpy(q + k * 64 + i * 4, row[b].qs + 4 * k, 4);
      }
    }
  }
}

// The 6-bit scale and minimum of sub-block s of a Q4_K block.
void scale_min_k4(const uint8_t* q, int s, int& sc, int& m) {
  if (s < 4) {
    sc = q[s] & 63;
    m = q[s + 4] & 63;
  } else {
    sc = (q[s + 4] & 0x0F) | ((q[s - 4] >> 6) << 4);
    m = (q[s + 4] >> 4) | ((q[s] >> 6) << 4);
  }
}

// Packs one group of Q4_K or Q5_K rows (formats in matmul_kernels.h).
template <class Block>
void pack_group_q45_k(const uint8_t* rows, int64_t n_valid, int64_t nb, size_t row_stride,
                      uint8_t* out) {
  constexpr bool kFive = std::is_same_v<Block, BlockQ5_K>;
  constexpr size_t kBytes = kFive ? internal::kPackedQ5KBytes : internal::kPackedQ4KBytes;
  std::memset(out, 0, static_cast<size_t>(nb) * kBytes);
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* o = out + b * kBytes;
    for (int64_t r = 0; r < n_valid; ++r) {
      const auto& blk = reinterpret_cast<const Block*>(rows + r * row_stride)[b];
      std::memcpy(o + 2 * r, &blk.d, 2);
      std::memcpy(o + 32 + 2 * r, &blk.dmin, 2);
      const int64_t h = r / 8, i = r % 8;
      for (int s = 0; s < 8; ++s) {
        int sc, m;
        scale_min_k4(blk.scales, s, sc, m);
        o[64 + 64 * h + 8 * s + i] = static_cast<uint8_t>(sc | ((m & 3) << 6));
        const int64_t p = 8 * (s % 4) + i;
        o[192 + 32 * h + p] |= static_cast<uint8_t>((m >> 2) << (s < 4 ? 0 : 4));
        uint8_t* q = o + internal::packed_k_subblock(kFive, s);
        for (int k = 0; k < 4; ++k) {
          for (int j = 0; j < 4; ++j) {
            // Elements 32s + e of the row: the low nibble of qs[32 (s / 2) + e]
            // for even s, the high nibble for odd s.
            auto nibble = [&](int e) {
              const uint8_t byte = blk.qs[32 * (s / 2) + e];
              return s % 2 == 0 ? byte & 0x0F : byte >> 4;
            };
            const int lo = nibble(4 * k + j), hi = nibble(16 + 4 * k + j);
            if constexpr (kFive) {
              // Bit s of qh[e] is the fifth bit of element 32s + e (dtype.h).
              auto bit5 = [&](int e) { return ((blk.qh[e] >> s) & 1) << 4; };
              put_q5(q, k, r, j, lo | bit5(4 * k + j), hi | bit5(16 + 4 * k + j));
            } else {
              q[64 * k + 4 * r + j] = static_cast<uint8_t>(lo | (hi << 4));
            }
          }
        }
      }
    }
  }
}

// Packs one group of Q6_K rows (format in matmul_kernels.h).
void pack_group_q6_k(const uint8_t* rows, int64_t n_valid, int64_t nb, size_t row_stride,
                     uint8_t* out) {
  std::memset(out, 0, static_cast<size_t>(nb) * internal::kPackedQ6KBytes);
  uint8_t q[kQK_K];
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* o = out + b * internal::kPackedQ6KBytes;
    for (int64_t r = 0; r < n_valid; ++r) {
      const auto& blk = reinterpret_cast<const BlockQ6_K*>(rows + r * row_stride)[b];
      std::memcpy(o + 2 * r, &blk.d, 2);
      // The row's 6-bit quants in element order (layout in dtype.h).
      for (int h = 0; h < 2; ++h) {
        for (int k = 0; k < 4; ++k) {
          for (int l = 0; l < 32; ++l) {
            const uint8_t lo = blk.ql[64 * h + l + 32 * (k & 1)];
            q[128 * h + 32 * k + l] = static_cast<uint8_t>(
                (k < 2 ? lo & 0x0F : lo >> 4) | (((blk.qh[32 * h + l] >> (2 * k)) & 3) << 4));
          }
        }
      }
      const int64_t h = r / 8, i = r % 8;
      for (int s = 0; s < 16; ++s) {
        o[32 + 128 * h + 8 * s + i] = static_cast<uint8_t>(blk.scales[s]);
        uint8_t* sub = o + 288 + 192 * s;
        const uint8_t* e = q + 16 * s;
        for (int k = 0; k < 2; ++k) {
          for (int j = 0; j < 4; ++j) {
            sub[64 * k + 4 * r + j] =
                static_cast<uint8_t>((e[4 * k + j] & 0x0F) | ((e[8 + 4 * k + j] & 0x0F) << 4));
          }
        }
        for (int j = 0; j < 4; ++j) {
          sub[128 + 4 * r + j] = static_cast<uint8_t>((e[j] >> 4) | ((e[4 + j] >> 4) << 2) |
                                                      ((e[8 + j] >> 4) << 4) |
                                                      ((e[12 + j] >> 4) << 6));
        }
      }
    }
  }
}

}  // namespace

bool pack_supported(DType type) {
  return type == DType::kQ8_0 || type == DType::kQ4_0 || type == DType::kQ4_1 ||
         type == DType::kQ5_0 || type == DType::kQ4_K || type == DType::kQ5_K ||
         type == DType::kQ6_K;
}

size_t internal::packed_block_bytes(DType type) {
  switch (type) {
    case DType::kQ8_0:
      return static_cast<size_t>(kPackRows) * kPackedSlabsQ8_0 * 4;
    case DType::kQ5_0:
      return kPackedQ5_0Bytes;
    default:
      TANDEM_CHECK(type == DType::kQ4_0 || type == DType::kQ4_1);
      return static_cast<size_t>(kPackRows) * kPackedSlabsQ4_0 * 4;
  }
}

size_t internal::packed_group_bytes(DType type, int64_t n_cols) {
  TANDEM_CHECK(pack_supported(type));
  if (type == DType::kQ4_K) return static_cast<size_t>(n_cols / kQK_K) * kPackedQ4KBytes;
  if (type == DType::kQ5_K) return static_cast<size_t>(n_cols / kQK_K) * kPackedQ5KBytes;
  if (type == DType::kQ6_K) return static_cast<size_t>(n_cols / kQK_K) * kPackedQ6KBytes;
  const size_t scales = type == DType::kQ4_1 ? 2 : 1;
  const size_t nb = static_cast<size_t>(n_cols / 32);
  return nb * (kPackRows * kScaleBytes * scales + packed_block_bytes(type));
}

size_t packed_bytes(DType type, int64_t n_rows, int64_t n_cols) {
  const int64_t n_groups = (n_rows + kPackRows - 1) / kPackRows;
  return internal::packed_group_bytes(type, n_cols) * static_cast<size_t>(n_groups);
}

Matrix pack(const Matrix& in, void* out) {
  TANDEM_CHECK(pack_supported(in.type) && in.layout == Layout::kRowMajor);
  TANDEM_CHECK(in.n_cols % dtype_info(in.type)->block_size == 0 && in.n_rows >= 0);
  const size_t row_stride = row_bytes(in.type, in.n_cols);
  const size_t group_bytes = internal::packed_group_bytes(in.type, in.n_cols);
  // A group's rows occupy exactly the bytes its packed form replaces
  // (16 * row_stride == group_bytes), so copying them aside first makes
  // in-place packing safe.
  TANDEM_CHECK(group_bytes == kPackRows * row_stride);
  const auto* src = static_cast<const uint8_t*>(in.data);
  auto* dst = static_cast<uint8_t*>(out);
  std::vector<uint8_t> rows(group_bytes);
  const int64_t nb = in.n_cols / 32;
  for (int64_t r = 0; r < in.n_rows; r += kPackRows) {
    const int64_t n_valid = std::min<int64_t>(kPackRows, in.n_rows - r);
    std::memcpy(rows.data(), src + r * row_stride, n_valid * row_stride);
    uint8_t* group = dst + (r / kPackRows) * group_bytes;
    if (in.type == DType::kQ4_K) {
      pack_group_q45_k<BlockQ4_K>(rows.data(), n_valid, in.n_cols / kQK_K, row_stride, group);
    } else if (in.type == DType::kQ5_K) {
      pack_group_q45_k<BlockQ5_K>(rows.data(), n_valid, in.n_cols / kQK_K, row_stride, group);
    } else if (in.type == DType::kQ6_K) {
      pack_group_q6_k(rows.data(), n_valid, in.n_cols / kQK_K, row_stride, group);
    } else if (in.type == DType::kQ8_0) {
      pack_group<BlockQ8_0>(rows.data(), n_valid, nb, row_stride, group);
    } else if (in.type == DType::kQ4_1) {
      pack_group<BlockQ4_1>(rows.data(), n_valid, nb, row_stride, group);
    } else if (in.type == DType::kQ5_0) {
      pack_group<BlockQ5_0>(rows.data(), n_valid, nb, row_stride, group);
    } else {
      pack_group<BlockQ4_0>(rows.data(), n_valid, nb, row_stride, group);
    }
  }
  return {in.type, out, in.n_rows, in.n_cols, Layout::kPacked};
}

}  // namespace tandem::kernels
