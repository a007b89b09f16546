#include "runtime/kernels/cpu/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "runtime/kernels/cpu/attention_kernels.h"

namespace tandem::kernels {
namespace {

using internal::AttentionKernels;
using internal::AttentionTile;

// Query rows per tile (tokens x heads of a GQA group): enough to amortize
// loading a key/value block, few enough that the accumulators stay in L1.
constexpr int64_t kTileRows = 32;

const AttentionKernels& kernels_for(Isa isa) {
  switch (isa) {
#if defined(TANDEM_KERNELS_X86)
    case Isa::kAvx2:
    case Isa::kAvx512:  // implies AVX2, FMA and F16C (see matmul.cc)
      return internal::avx2_attention_kernels();
#endif
#if defined(TANDEM_KERNELS_NEON)
    case Isa::kNeon:
      return internal::neon_attention_kernels();
#endif
    default:
      return internal::portable_attention_kernels();
  }
}

}  // namespace

absl::Status check_attention_shape(const AttentionShape& s) {
  if (s.n_heads <= 0 || s.n_kv_heads <= 0 || s.head_dim <= 0 || s.n_heads % s.n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("attention: ", s.n_heads, " query heads over ",
                                                   s.n_kv_heads, " KV heads is not a GQA layout"));
  }
  if (s.head_dim % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention: head_dim ", s.head_dim, " is not a multiple of 8, which the kernels need"));
  }
  return absl::OkStatus();
}

absl::StatusOr<AttentionWorkspace> AttentionWorkspace::Create(const AttentionShape& shape,
                                                              int64_t max_tokens,
                                                              int64_t max_block_size,
                                                              int n_threads) {
  TANDEM_RETURN_IF_ERROR(check_attention_shape(shape));
  if (max_tokens <= 0 || max_block_size <= 0 || n_threads <= 0) {
    return absl::InvalidArgumentError("attention workspace: sizes must be positive");
  }
  AttentionWorkspace ws;
  ws.shape_ = shape;
  ws.max_tokens_ = max_tokens;
  ws.max_block_size_ = max_block_size;
  ws.n_threads_ = n_threads;
  const int64_t group = shape.n_heads / shape.n_kv_heads;
  ws.tile_tokens_ = std::max<int64_t>(1, kTileRows / group);
  const int64_t rows = ws.tile_tokens_ * group;
  // m and l of the rows, then the tile's own scratch (converted keys and
  // values of one block, and its scores).
  ws.thread_scratch_floats_ =
      2 * rows + internal::attention_scratch_floats(max_block_size, shape.head_dim, group);
  ws.scratch_.resize(static_cast<size_t>(n_threads * ws.thread_scratch_floats_));
  ws.tiles_.resize(static_cast<size_t>(2 * max_tokens));
  // Split-K runs only while items < 2 x threads, in at most 2 x threads
  // chunks per item: under 4 x threads units.
  ws.max_partials_ = 4 * static_cast<int64_t>(n_threads);
  ws.partials_.resize(static_cast<size_t>(ws.max_partials_ * rows * (shape.head_dim + 2)));
  return ws;
}

void attention(const KvLayerView& kv, std::span<const int32_t> seq_ids,
               std::span<const int32_t> positions, const float* q, float* out,
               AttentionWorkspace& ws, ThreadPool& pool, Isa isa) {
  const AttentionShape& sh = ws.shape_;
  const int64_t n_tokens = static_cast<int64_t>(seq_ids.size());
  TANDEM_CHECK(positions.size() == seq_ids.size() && n_tokens <= ws.max_tokens_);
  TANDEM_CHECK(kv.block_size > 0 && kv.block_size <= ws.max_block_size_);
  TANDEM_CHECK(pool.n_threads() <= ws.n_threads_);
  TANDEM_CHECK(kv.type == DType::kF32 || kv.type == DType::kF16);
  if (n_tokens == 0) return;
  const internal::AttendTile attend = kernels_for(isa).attend;
  const int64_t group = sh.n_heads / sh.n_kv_heads;
  const int64_t hd = sh.head_dim;
  const int64_t q_dim = sh.n_heads * hd;
  const int64_t bs = kv.block_size;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t rows_max = ws.tile_tokens_ * group;

  // Tiles: runs of consecutive batch tokens of one sequence, cut at tile_tokens_.
  int64_t n_tiles = 0;
  for (int64_t i = 0; i < n_tokens;) {
    const int64_t first = i;
    while (i < n_tokens && i - first < ws.tile_tokens_ && seq_ids[i] == seq_ids[first]) ++i;
    ws.tiles_[2 * n_tiles] = static_cast<int32_t>(first);
    ws.tiles_[2 * n_tiles + 1] = static_cast<int32_t>(i - first);
    ++n_tiles;
  }
  const int64_t n_items = n_tiles * sh.n_kv_heads;
  const int n_threads = pool.n_threads();
  int64_t n_chunks = 1;
  if (n_items < 2 * n_threads) {
    n_chunks = std::min((2 * n_threads + n_items - 1) / n_items, ws.max_partials_ / n_items);
    n_chunks = std::max<int64_t>(n_chunks, 1);
  }
  const bool split = n_chunks > 1;
  const int64_t partial_floats = rows_max * (hd + 2);

  auto make_tile = [&](int64_t item, float* scratch) {
    // Late tiles first: under causal masking they hold the most work.
    const int64_t tile = n_tiles - 1 - item / sh.n_kv_heads;
    const int64_t kv_head = item % sh.n_kv_heads;
    const int64_t first = ws.tiles_[2 * tile];
    AttentionTile t;
    t.q = q + first * q_dim + kv_head * group * hd;
    t.q_stride = q_dim;
    t.positions = positions.data() + first;
    t.n_tokens = ws.tiles_[2 * tile + 1];
    t.group = group;
    t.head_dim = hd;
    t.scale = scale;
    t.kv = kv;
    t.block_table = kv.block_tables[seq_ids[first]];
    t.kv_head = kv_head;
    t.pos_begin = 0;
    t.pos_end = std::numeric_limits<int64_t>::max();
    t.m = scratch;
    t.l = scratch + rows_max;
    t.acc = out + first * q_dim + kv_head * group * hd;
    t.acc_stride = q_dim;
    t.scratch = scratch + 2 * rows_max;
    return t;
  };

  std::atomic<int64_t> next{0};
  const int64_t n_units = n_items * n_chunks;
  pool.run([&](int thread, int) {
    float* scratch = ws.scratch_.data() + thread * ws.thread_scratch_floats_;
    for (int64_t u = next.fetch_add(1, std::memory_order_relaxed); u < n_units;
         u = next.fetch_add(1, std::memory_order_relaxed)) {
      AttentionTile t = make_tile(u / n_chunks, scratch);
      if (!split) {
        attend(t);
        for (int64_t i = 0; i < t.n_tokens; ++i) {
          for (int64_t g = 0; g < group; ++g) {
            float* row = t.acc + i * t.acc_stride + g * hd;
            const float inv = 1.0f / t.l[i * group + g];
            for (int64_t d = 0; d < hd; ++d) row[d] *= inv;
          }
        }
        continue;
      }
      int64_t last = 0;
      for (int64_t i = 0; i < t.n_tokens; ++i) last = std::max<int64_t>(last, t.positions[i]);
      const int64_t n_blocks = last / bs + 1;
      const int64_t per_chunk = (n_blocks + n_chunks - 1) / n_chunks;
      const int64_t c = u % n_chunks;
      t.pos_begin = c * per_chunk * bs;
      t.pos_end = (c + 1) * per_chunk * bs;
      float* partial = ws.partials_.data() + u * partial_floats;
      t.acc = partial;
      t.acc_stride = group * hd;
      t.m = partial + rows_max * hd;
      t.l = t.m + rows_max;
      attend(t);
    }
  });
  if (!split) return;

  // Merge the chunks of each item: out = sum_c e^(m_c - M) acc_c / sum_c e^(m_c - M) l_c.
  pool.parallel_for(n_items, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t tile = n_tiles - 1 - item / sh.n_kv_heads;
      const int64_t kv_head = item % sh.n_kv_heads;
      const int64_t first = ws.tiles_[2 * tile];
      const int64_t rows = ws.tiles_[2 * tile + 1] * group;
      for (int64_t r = 0; r < rows; ++r) {
        float* o = out + (first + r / group) * q_dim + (kv_head * group + r % group) * hd;
        float m_max = -std::numeric_limits<float>::infinity();
        for (int64_t c = 0; c < n_chunks; ++c) {
          const float* p = ws.partials_.data() + (item * n_chunks + c) * partial_floats;
          if (p[rows_max * hd + rows_max + r] > 0.0f) m_max = std::max(m_max, p[rows_max * hd + r]);
        }
        std::fill_n(o, hd, 0.0f);
        float l_sum = 0.0f;
        for (int64_t c = 0; c < n_chunks; ++c) {
          const float* p = ws.partials_.data() + (item * n_chunks + c) * partial_floats;
          const float l = p[rows_max * hd + rows_max + r];
          if (l <= 0.0f) continue;  // the chunk lies past this row's position
          const float w = std::exp(p[rows_max * hd + r] - m_max);
          l_sum += w * l;
          const float* acc = p + r * hd;
          for (int64_t d = 0; d < hd; ++d) o[d] += w * acc[d];
        }
        const float inv = 1.0f / l_sum;
        for (int64_t d = 0; d < hd; ++d) o[d] *= inv;
      }
    }
  });
}

void convert_f32_to_f16(const float* src, uint16_t* dst, int64_t n, Isa isa) {
  kernels_for(isa).to_f16(src, dst, n);
}

void swiglu(float* gate, const float* up, int64_t n, Isa isa) {
  kernels_for(isa).swiglu(gate, up, n);
}

}  // namespace tandem::kernels
