// Activation buffers of one Llama forward pass, sized once for the largest
// batch so that a step allocates nothing. Head, FFN and vocabulary sizes are
// the rank's shard's.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "runtime/kernels/cpu/attention.h"
#include "transport/communicator.h"

namespace tandem::model {

// Adds the seconds of its scope to `total`.
class SyncTimer {
 public:
  explicit SyncTimer(double& total) : total_(total), start_(transport::Clock::now()) {}
  ~SyncTimer() {
    total_ += std::chrono::duration<double>(transport::Clock::now() - start_).count();
  }

 private:
  double& total_;
  transport::Clock::time_point start_;
};

struct LlamaWorkspace {
  int64_t max_tokens = 0;
  int64_t max_seq_len = 0;
  int n_threads = 1;
  std::vector<float> x;       // [max_tokens][dim] residual stream
  std::vector<float> xb;      // [max_tokens][dim] normed input / block output
  std::vector<float> q;       // [max_tokens][n_heads * head_dim]
  std::vector<float> k;       // [max_tokens][n_kv_heads * head_dim]
  std::vector<float> v;       // [max_tokens][n_kv_heads * head_dim]
  std::vector<float> attn;    // [max_tokens][n_heads * head_dim]
  std::vector<float> gate;    // [max_tokens][ffn_dim]
  std::vector<float> up;      // [max_tokens][ffn_dim]
  std::vector<float> rope;    // [max_tokens][rope_dim] cos/sin pairs
  std::optional<kernels::AttentionWorkspace> attention;  // the attention kernel's buffers
  std::vector<float> embd_row;
  std::vector<uint8_t> scratch;  // activations converted for the matmul kernels
  // Distributed passes: head rows of this rank's vocabulary slice, padded to
  // the shard's vocab_stride; their gather over the TP group; hidden states
  // in flight to the next stage, and those sends.
  std::vector<float> logits_local;  // [max_tokens][vocab_stride]
  std::vector<float> gathered;      // [tp][max_tokens][vocab_stride]
  std::vector<float> send_x;        // [max_tokens][dim]
  std::vector<std::unique_ptr<transport::Request>> sends;
  std::vector<uint8_t> no_logits;  // [max_tokens] zeros: micro-batches that want none
  // Seconds this rank spent in exchanges with the others (all_reduces,
  // stage-to-stage transfers, the logits gather), waiting for them included.
  double sync_seconds = 0;
};

}  // namespace tandem::model
