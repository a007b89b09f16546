// pack(): row-major Q8_0/Q4_0/Q4_1/Q5_0/Q4_K/Q5_K/Q6_K matrices into the 16-row groups of
// Layout::kPacked (format in matmul_kernels.h). Runs once per weight at load
// time, so it is plain scalar code.

#include <algorithm>
#include <bit>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/status.h"
#include "runtime/kernels/cpu/matmul.h"
#include "runtime/kernels/cpu/matmul_kernels.h"

namespace tandem::kernels {
namespace {

constexpr size_t kScaleBytes = 2;

// The packers handle 4 bytes at a time as little-endian words: byte j of a
// word is bits 8j..8j+7.
static_assert(std::endian::native == std::endian::little);
uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
void store_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, sizeof(v)); }
constexpr uint32_t kLowNibbles = 0x0F0F0F0F;

// Bits 0..3 of x to bit 0 of bytes 0..3 (the shifted copies do not overlap,
// so nothing carries).
uint32_t spread4(uint32_t x) { return ((x & 0xF) * 0x00204081u) & 0x01010101u; }

// Bytes 4r..4r+3 of slab k of a packed Q5_0 block column or Q5_K sub-block at
// q (format in matmul_kernels.h), from the 5-bit quants of their low (lo5)
// and high (hi5) elements, one per byte.
void put_q5(uint8_t* q, int k, int64_t r, uint32_t lo5, uint32_t hi5) {
  store_u32(q + 64 * k + 4 * r, lo5 | ((hi5 & 0x07070707u) << 5));
  uint8_t* top = q + 256 + 4 * r;
  store_u32(top, load_u32(top) | (((hi5 >> 3) & 0x03030303u) << (2 * k)));
}

// Packs one group of Q8_0, Q4_0, Q4_1 or Q5_0 rows from `rows` (n_valid
// row-major rows; the rest are zero) to `out`.
template <class Block>
void pack_group(const uint8_t* rows, int64_t n_valid, int64_t nb, size_t row_stride, uint8_t* out) {
  constexpr bool kMinima = std::is_same_v<Block, BlockQ4_1>;
  constexpr bool kFive = std::is_same_v<Block, BlockQ5_0>;
  constexpr size_t kScaleArrays = kMinima ? 2 : 1;
  // Q5_0 adds its top bits to the block column's slabs.
  const size_t block_bytes = kFive ? internal::kPackedQ5_0Bytes : kPackRows * sizeof(Block::qs);
  uint8_t* scales = out;
  const size_t scale_bytes = kPackRows * kScaleBytes * kScaleArrays;
  uint8_t* quants = out + static_cast<size_t>(nb) * scale_bytes;
  std::memset(out, 0, static_cast<size_t>(nb) * (scale_bytes + block_bytes));
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
          // Elements 4k.. (low nibbles) and 16 + 4k.. (high); bit e of qh
          // is the fifth bit of element e.
          const uint32_t w = load_u32(row[b].qs + 4 * k);
          put_q5(q, k, i, (w & kLowNibbles) | (spread4(qh >> (4 * k)) << 4),
                 ((w >> 4) & kLowNibbles) | (spread4(qh >> (16 + 4 * k)) << 4));
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
        // Elements 32s + e of the row: the nibbles of qs[32 (s / 2) + e], the
        // low ones for even s.
        const uint8_t* qs = blk.qs + 32 * (s / 2);
        const int shift = s % 2 == 0 ? 0 : 4;
        for (int k = 0; k < 4; ++k) {
          const uint32_t lo = (load_u32(qs + 4 * k) >> shift) & kLowNibbles;
          const uint32_t hi = (load_u32(qs + 16 + 4 * k) >> shift) & kLowNibbles;
          if constexpr (kFive) {
            // Bit s of qh[e] is the fifth bit of element 32s + e (dtype.h).
            auto fifth = [&](int e) { return ((load_u32(blk.qh + e) >> s) & 0x01010101u) << 4; };
            put_q5(q, k, r, lo | fifth(4 * k), hi | fifth(16 + 4 * k));
          } else {
            store_u32(q + 64 * k + 4 * r, lo | (hi << 4));
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
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* o = out + b * internal::kPackedQ6KBytes;
    for (int64_t r = 0; r < n_valid; ++r) {
      const auto& blk = reinterpret_cast<const BlockQ6_K*>(rows + r * row_stride)[b];
      std::memcpy(o + 2 * r, &blk.d, 2);
      const int64_t h = r / 8, i = r % 8;
      for (int s = 0; s < 16; ++s) {
        o[32 + 128 * h + 8 * s + i] = static_cast<uint8_t>(blk.scales[s]);
        // Quad c of the sub-block (elements e = 16s + 4c..) as words of low
        // nibbles and of top 2 bits (layout in dtype.h: element
        // 128h + 32k + l sits in ql[64h + 32 (k % 2) + l] >> 4 (k / 2) and
        // qh[32h + l] >> 2k).
        uint32_t low[4], top[4];
        for (int c = 0; c < 4; ++c) {
          const int e = 16 * s + 4 * c, eh = e / 128, k = e % 128 / 32, l = e % 32;
          low[c] = (load_u32(blk.ql + 64 * eh + 32 * (k % 2) + l) >> (4 * (k / 2))) & kLowNibbles;
          top[c] = (load_u32(blk.qh + 32 * eh + l) >> (2 * k)) & 0x03030303u;
        }
        uint32_t q6[4];
        for (int c = 0; c < 4; ++c) q6[c] = low[c] | (top[c] << 4);
        // Quads 0, 1 and 3 whole, quad 2 in their top bits (format in matmul_kernels.h).
        uint8_t* sub = o + 288 + 192 * s;
        store_u32(sub + 4 * r, q6[0] | ((q6[2] & 0x03030303u) << 6));
        store_u32(sub + 64 + 4 * r, q6[1] | (((q6[2] >> 2) & 0x03030303u) << 6));
        store_u32(sub + 128 + 4 * r, q6[3] | (((q6[2] >> 4) & 0x03030303u) << 6));
      }
    }
  }
}

// Packs one group of rows: n_valid row-major rows of nb blocks at `rows`
// (the rest of the group is zero) to `out`.
using GroupPacker = void (*)(const uint8_t* rows, int64_t n_valid, int64_t nb, size_t row_stride,
                             uint8_t* out);

GroupPacker group_packer(DType type) {
  switch (type) {
    case DType::kQ8_0:
      return pack_group<BlockQ8_0>;
    case DType::kQ4_0:
      return pack_group<BlockQ4_0>;
    case DType::kQ4_1:
      return pack_group<BlockQ4_1>;
    case DType::kQ5_0:
      return pack_group<BlockQ5_0>;
    case DType::kQ4_K:
      return pack_group_q45_k<BlockQ4_K>;
    case DType::kQ5_K:
      return pack_group_q45_k<BlockQ5_K>;
    default:
      TANDEM_CHECK(type == DType::kQ6_K);
      return pack_group_q6_k;
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

Matrix pack(const Matrix& in, void* out, ThreadPool* pool) {
  TANDEM_CHECK(pack_supported(in.type) && in.layout == Layout::kRowMajor);
  TANDEM_CHECK(in.n_cols % dtype_info(in.type)->block_size == 0 && in.n_rows >= 0);
  const size_t row_stride = row_bytes(in.type, in.n_cols);
  const size_t group_bytes = internal::packed_group_bytes(in.type, in.n_cols);
  // A group's rows occupy exactly the bytes its packed form replaces
  // (16 * row_stride == group_bytes), so copying them aside first makes
  // in-place packing safe, and groups independent of each other.
  TANDEM_CHECK(group_bytes == kPackRows * row_stride);
  const auto* src = static_cast<const uint8_t*>(in.data);
  auto* dst = static_cast<uint8_t*>(out);
  const int64_t nb = in.n_cols / dtype_info(in.type)->block_size;
  const GroupPacker packer = group_packer(in.type);
  auto pack_groups = [&](int64_t g0, int64_t g1) {
    std::vector<uint8_t> rows(group_bytes);
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t r = g * kPackRows;
      const int64_t n_valid = std::min<int64_t>(kPackRows, in.n_rows - r);
      std::memcpy(rows.data(), src + r * row_stride, n_valid * row_stride);
      uint8_t* group = dst + g * group_bytes;
      packer(rows.data(), n_valid, nb, row_stride, group);
    }
  };
  const int64_t n_groups = (in.n_rows + kPackRows - 1) / kPackRows;
  if (pool != nullptr) {
    pool->parallel_for(n_groups, 1, pack_groups);
  } else {
    pack_groups(0, n_groups);
  }
  return {in.type, out, in.n_rows, in.n_cols, Layout::kPacked};
}

}  // namespace tandem::kernels
