// One Llama forward pass on one rank of a TP x PP layout. With one rank it is
// the whole model; with several, the shard's heads, FFN rows and vocabulary
// rows, with two all_reduces per layer over the TP group, and hidden states
// passed between stages in micro-batches so that the stages overlap.
#include <algorithm>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "runtime/kernels/cpu/attention.h"
#include "runtime/kernels/cpu/convert.h"
#include "runtime/model/layer_ops.h"
#include "runtime/model/llama.h"
#include "runtime/model/llama_workspace.h"

namespace tandem::model {
namespace {

// Hidden states from one stage to the next (a user tag of the world).
constexpr uint32_t kHiddenTag = 0x4844;  // "HD"
// Pipeline micro-batches: at least this many tokens each.
constexpr int64_t kMinMicroBatch = 16;

Batch slice(const Batch& b, int64_t begin, int64_t end, bool last,
            std::span<const uint8_t> no_logits) {
  const size_t off = static_cast<size_t>(begin);
  const size_t len = static_cast<size_t>(end - begin);
  Batch s{b.tokens.subspan(off, len), b.positions.subspan(off, len), b.seq_ids.subspan(off, len),
          {}};
  if (!b.want_logits.empty()) {
    s.want_logits = b.want_logits.subspan(off, len);
  } else if (!last) {
    s.want_logits = no_logits.first(len);  // only the batch's last token wants logits
  }
  return s;
}

}  // namespace

absl::Status LlamaModel::validate(const Batch& batch, const engine::KvCache& cache,
                                  const LlamaWorkspace& ws) const {
  const int64_t n = batch.size();
  if (n == 0) return absl::InvalidArgumentError("empty batch");
  if (n > ws.max_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch of ", n, " tokens exceeds the planned ", ws.max_tokens));
  }
  if (static_cast<int64_t>(batch.positions.size()) != n ||
      static_cast<int64_t>(batch.seq_ids.size()) != n ||
      (!batch.want_logits.empty() && static_cast<int64_t>(batch.want_logits.size()) != n)) {
    return absl::InvalidArgumentError("batch arrays differ in length");
  }
  const engine::KvCacheConfig& kv = cache.config();
  if (kv.block_size > ws.attention->max_block_size() || kv.head_dim != local_.head_dim ||
      kv.n_kv_heads != local_.n_kv_heads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the KV cache (", kv.n_kv_heads, " heads x ", kv.head_dim, ", blocks of ", kv.block_size,
        ") does not fit this model's workspace (", local_.n_kv_heads, " x ", local_.head_dim,
        ", blocks of at most ", ws.attention->max_block_size(), ")"));
  }
  for (int64_t i = 0; i < n; ++i) {
    if (batch.tokens[i] < 0 || batch.tokens[i] >= config_.n_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", batch.tokens[i],
                                                     " outside the vocabulary [0, ",
                                                     config_.n_vocab, ")"));
    }
    if (!cache.is_open(batch.seq_ids[i])) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", batch.seq_ids[i], " is not open"));
    }
    if (batch.positions[i] < 0 || batch.positions[i] >= ws.max_seq_len) {
      return absl::OutOfRangeError(absl::StrCat("position ", batch.positions[i],
                                                " outside the context of ", ws.max_seq_len));
    }
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::forward(const Batch& batch, engine::KvCache& cache, LlamaWorkspace& ws,
                                 kernels::ThreadPool& pool, std::span<float> logits,
                                 const ParallelContext& parallel) const {
  TANDEM_RETURN_IF_ERROR(validate(batch, cache, ws));
  const int64_t n = batch.size();
  const int64_t n_out = batch.n_outputs();
  if (shard_.has_head && static_cast<int64_t>(logits.size()) < n_out * config_.n_vocab) {
    return absl::InvalidArgumentError("logits buffer too small");
  }
  for (int64_t i = 0; i < n; ++i) {
    TANDEM_RETURN_IF_ERROR(cache.reserve(batch.seq_ids[i], batch.positions[i] + 1));
  }
  const transport::Deadline deadline = transport::Clock::now() + parallel.timeout;
  // Every stage splits the same way, so micro-batch m meets micro-batch m.
  const int64_t n_micro =
      parallel.n_stages > 1 ? std::clamp<int64_t>(n / kMinMicroBatch, 1, 2 * parallel.n_stages) : 1;
  ws.sends.clear();
  absl::Status status;
  int64_t out_row = 0;
  for (int64_t m = 0; m < n_micro && status.ok(); ++m) {
    const partition::Range r = partition::split_range(n, n_micro, m);
    const Batch sub = slice(batch, r.begin, r.end, m + 1 == n_micro, ws.no_logits);
    status = run_micro_batch(sub, r.begin, out_row, cache, ws, pool, logits, parallel, deadline);
    out_row += sub.n_outputs();
  }
  for (auto& send : ws.sends) {
    const SyncTimer timer(ws.sync_seconds);
    absl::Status sent = send->wait(deadline);
    if (status.ok()) status = sent;
  }
  ws.sends.clear();  // cancels what a failure left pending
  TANDEM_RETURN_IF_ERROR(status);
  if (shard_.has_head && parallel.tp_group != nullptr && n_out > 0) {
    return gather_logits(n_out, ws, logits, parallel, deadline);
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::run_micro_batch(const Batch& batch, int64_t row0, int64_t out_row,
                                         engine::KvCache& cache, LlamaWorkspace& ws,
                                         kernels::ThreadPool& pool, std::span<float> logits,
                                         const ParallelContext& parallel,
                                         transport::Deadline deadline) const {
  const LlamaConfig& c = local_;
  const int64_t n = batch.size();
  const std::span<uint8_t> scratch(ws.scratch);
  auto matmul = [&](const Weight& w, const float* x, int64_t rows, float* y) {
    kernels::matmul(w.matrix(), x, w.n_cols, rows, y, w.n_rows, scratch, pool);
  };
  // Sums the TP ranks' partial outputs (row-parallel matrices, vocabulary
  // slices of the embedding).
  auto tp_sum = [&](float* data, int64_t count) {
    if (parallel.tp_group == nullptr) return absl::OkStatus();
    const SyncTimer timer(ws.sync_seconds);
    return parallel.tp_group->all_reduce(data, static_cast<size_t>(count),
                                         transport::DataType::kF32, transport::ReduceOp::kSum,
                                         deadline);
  };

  if (shard_.has_embedding) {
    const Weight& embd = weights_.token_embd;
    const size_t embd_row_bytes = row_bytes(embd.type, c.dim);
    for (int64_t i = 0; i < n; ++i) {
      float* x = ws.x.data() + i * c.dim;
      if (!shard_.vocab.contains(batch.tokens[i])) {
        std::fill_n(x, c.dim, 0.0f);
        continue;
      }
      const auto* row = static_cast<const uint8_t*>(embd.data) +
                        embd_row_bytes * (batch.tokens[i] - shard_.vocab.begin);
      kernels::dequantize_row(embd.type, row, x, c.dim);
    }
    TANDEM_RETURN_IF_ERROR(tp_sum(ws.x.data(), n * c.dim));
  } else {
    const SyncTimer timer(ws.sync_seconds);
    TANDEM_RETURN_IF_ERROR(parallel.world->recv(ws.x.data(), sizeof(float) * n * c.dim,
                                                parallel.prev_stage, kHiddenTag, deadline));
  }
  // The element-wise steps between the matmuls run over the threads, in runs
  // of tokens taken dynamically (as the matmuls' rows): in a prefill they are
  // otherwise a serial tenth of the step. One token (decode) runs inline.
  const int64_t token_chunk = std::max<int64_t>(1, n / (4 * pool.n_threads()));
  auto per_token = [&](auto&& fn) {
    pool.parallel_for_dynamic(n, token_chunk, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) fn(i);
    });
  };
  const int64_t dim = c.dim;
  per_token([&](int64_t i) {
    rope_angles(batch.positions[i], c.rope_dim, c.rope_freq_base, c.rope_freq_scale,
                weights_.rope_freqs, ws.rope.data() + i * c.rope_dim);
    if (c.n_layers > 0) {
      rms_norm(ws.x.data() + i * dim, weights_.layers[0].attn_norm.f32(), c.rms_eps, dim,
               ws.xb.data() + i * dim);
    }
  });
  for (int64_t il = 0; il < c.n_layers; ++il) {
    const LlamaLayer& l = weights_.layers[il];
    matmul(l.wq, ws.xb.data(), n, ws.q.data());
    matmul(l.wk, ws.xb.data(), n, ws.k.data());
    matmul(l.wv, ws.xb.data(), n, ws.v.data());
    per_token([&](int64_t i) {
      const float* cs = ws.rope.data() + i * c.rope_dim;
      rope_apply(ws.q.data() + i * c.q_dim(), c.n_heads, c.head_dim, c.rope_dim, cs);
      rope_apply(ws.k.data() + i * c.kv_dim(), c.n_kv_heads, c.head_dim, c.rope_dim, cs);
      cache.store(il, batch.seq_ids[i], batch.positions[i], ws.k.data() + i * c.kv_dim(),
                  ws.v.data() + i * c.kv_dim());
    });
    attention(il, batch, cache, ws, pool);
    matmul(l.wo, ws.attn.data(), n, ws.xb.data());
    TANDEM_RETURN_IF_ERROR(tp_sum(ws.xb.data(), n * dim));
    per_token([&](int64_t i) {
      float* x = ws.x.data() + i * dim;
      add_in_place(x, ws.xb.data() + i * dim, dim);
      rms_norm(x, l.ffn_norm.f32(), c.rms_eps, dim, ws.xb.data() + i * dim);
    });
    matmul(l.w_gate, ws.xb.data(), n, ws.gate.data());
    matmul(l.w_up, ws.xb.data(), n, ws.up.data());
    per_token([&](int64_t i) {
      kernels::swiglu(ws.gate.data() + i * c.ffn_dim, ws.up.data() + i * c.ffn_dim, c.ffn_dim);
    });
    matmul(l.w_down, ws.gate.data(), n, ws.xb.data());
    TANDEM_RETURN_IF_ERROR(tp_sum(ws.xb.data(), n * dim));
    // The residual add, fused with the next layer's attention norm.
    const LlamaLayer* next = il + 1 < c.n_layers ? &weights_.layers[il + 1] : nullptr;
    per_token([&](int64_t i) {
      float* x = ws.x.data() + i * dim;
      add_in_place(x, ws.xb.data() + i * dim, dim);
      if (next != nullptr) {
        rms_norm(x, next->attn_norm.f32(), c.rms_eps, dim, ws.xb.data() + i * dim);
      }
    });
  }

  if (!shard_.has_head) {
    // The next micro-batch overwrites x: send from a copy, waited at the end.
    float* out = ws.send_x.data() + row0 * c.dim;
    std::copy_n(ws.x.data(), n * c.dim, out);
    TANDEM_ASSIGN_OR_RETURN(auto send, parallel.world->isend(out, sizeof(float) * n * c.dim,
                                                             parallel.next_stage, kHiddenTag));
    ws.sends.push_back(std::move(send));
    return absl::OkStatus();
  }

  // Final norm of the rows that want logits, packed, then the head.
  int64_t o = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!batch.wants_logits(i)) continue;
    rms_norm(ws.x.data() + i * c.dim, weights_.output_norm.f32(), c.rms_eps, c.dim,
             ws.xb.data() + o * c.dim);
    ++o;
  }
  if (o == 0) return absl::OkStatus();
  if (parallel.tp_group == nullptr) {
    matmul(weights_.output, ws.xb.data(), o, logits.data() + out_row * config_.n_vocab);
    return absl::OkStatus();
  }
  // This rank's vocabulary slice, rows padded to vocab_stride for the gather.
  const int64_t stride = shard_.vocab_stride;
  const int64_t v = c.n_vocab;
  float* local = ws.logits_local.data() + out_row * stride;
  matmul(weights_.output, ws.xb.data(), o, local);
  if (v < stride) {
    for (int64_t r = o - 1; r >= 0; --r) {
      std::memmove(local + r * stride, local + r * v, sizeof(float) * v);
      std::fill(local + r * stride + v, local + (r + 1) * stride, 0.0f);
    }
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::gather_logits(int64_t n_out, LlamaWorkspace& ws, std::span<float> logits,
                                       const ParallelContext& parallel,
                                       transport::Deadline deadline) const {
  const int64_t stride = shard_.vocab_stride;
  const size_t count = static_cast<size_t>(n_out * stride);
  const SyncTimer timer(ws.sync_seconds);
  TANDEM_RETURN_IF_ERROR(parallel.tp_group->all_gather(ws.logits_local.data(), ws.gathered.data(),
                                                       count, transport::DataType::kF32, deadline));
  const int64_t n_vocab = config_.n_vocab;
  const int tp = parallel.tp_group->size();
  for (int r = 0; r < tp; ++r) {
    const int64_t begin = r * stride;
    const int64_t len = std::min(stride, n_vocab - begin);
    for (int64_t row = 0; row < n_out; ++row) {
      std::copy_n(ws.gathered.data() + r * count + row * stride, len,
                  logits.data() + row * n_vocab + begin);
    }
  }
  return absl::OkStatus();
}

}  // namespace tandem::model
