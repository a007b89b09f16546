// Grouped-query attention over the paged KV cache: each (token, head) pair
// scores the positions [0, pos] of its own sequence, block by block.
#include <algorithm>
#include <cmath>
#include <limits>

#include "runtime/model/llama.h"
#include "runtime/model/llama_workspace.h"

namespace tandem::model {
namespace {

float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace

void LlamaModel::attention(int64_t il, const Batch& batch, engine::KvCache& cache,
                           LlamaWorkspace& ws, kernels::ThreadPool& pool) const {
  const LlamaConfig& c = local_;
  const int64_t n_items = batch.size() * c.n_heads;
  const int64_t group = c.n_heads / c.n_kv_heads;
  const int64_t hd = c.head_dim;
  const int64_t bs = cache.config().block_size;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

  pool.run([&](int thread, int n_threads) {
    float* scores = ws.scores.data() + static_cast<int64_t>(thread) * ws.max_seq_len;
    for (int64_t item = thread; item < n_items; item += n_threads) {
      const int64_t i = item / c.n_heads;
      const int64_t h = item % c.n_heads;
      const int64_t kvh = h / group;
      const int32_t seq = batch.seq_ids[i];
      const int64_t n_pos = batch.positions[i] + 1;
      const float* q = ws.q.data() + i * c.q_dim() + h * hd;
      float* out = ws.attn.data() + i * c.q_dim() + h * hd;

      float max_score = -std::numeric_limits<float>::infinity();
      for (int64_t p0 = 0; p0 < n_pos; p0 += bs) {
        const float* keys = cache.key_block(il, seq, p0 / bs, kvh);
        const int64_t end = std::min(bs, n_pos - p0);
        for (int64_t j = 0; j < end; ++j) {
          const float s = dot(q, keys + j * hd, hd) * scale;
          scores[p0 + j] = s;
          max_score = std::max(max_score, s);
        }
      }
      double sum = 0.0;
      for (int64_t p = 0; p < n_pos; ++p) {
        const float e = std::exp(scores[p] - max_score);
        scores[p] = e;
        sum += e;
      }
      const float inv_sum = static_cast<float>(1.0 / sum);
      for (int64_t d = 0; d < hd; ++d) out[d] = 0.0f;
      for (int64_t p0 = 0; p0 < n_pos; p0 += bs) {
        const float* values = cache.value_block(il, seq, p0 / bs, kvh);
        const int64_t end = std::min(bs, n_pos - p0);
        for (int64_t j = 0; j < end; ++j) axpy(scores[p0 + j] * inv_sum, values + j * hd, out, hd);
      }
    }
  });
}

}  // namespace tandem::model
