// Token sampling: turns one row of logits into a token id. The chain follows
// llama.cpp's default order (penalties, top-k, top-p, min-p, temperature, then a
// draw from the softmax) so that the same parameters mean the same thing to
// users coming from llama.cpp. The draw uses std::mt19937_64 with our own
// bits-to-uniform conversion, so a seed gives the same tokens on every
// platform and standard library. All buffers are sized at construction; the
// per-token calls allocate nothing.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace tandem::engine {

struct SamplingParams {
  float temperature = 0.8f;  // <= 0: greedy (argmax, lowest id wins ties)
  int32_t top_k = 40;        // <= 0: off
  float top_p = 0.95f;       // >= 1: off
  float min_p = 0.05f;       // <= 0: off
  // 1: off. llama.cpp's rule for tokens in the last repeat_last_n:
  // logit > 0 ? logit / p : logit * p.
  float repeat_penalty = 1.0f;
  float frequency_penalty = 0.0f;  // logit -= count * f
  float presence_penalty = 0.0f;   // logit -= (count > 0) * p
  int32_t repeat_last_n = 64;      // window of the penalties; 0: penalties off
  uint64_t seed = 0;
};

// Largest penalty window we accept; beyond it the window costs real memory
// per sequence and no sampling recipe asks for it.
inline constexpr int32_t kMaxRepeatLastN = 1 << 20;

// InvalidArgument naming the offending field for negative, non-finite or
// absurd values. Parameters come from users, so check them before building a
// Sampler.
absl::Status validate(const SamplingParams& p);

class Sampler {
 public:
  // `params` must pass validate() (checked); n_vocab > 0. Allocates every
  // buffer the sampler will ever need.
  Sampler(const SamplingParams& params, int32_t n_vocab);

  // Picks the next token from `logits` (size n_vocab). Applies the penalties
  // of the accepted tokens, then the filters, then draws. Does not record the
  // token: call accept() with whatever the caller keeps. Does not allocate.
  int32_t sample(std::span<const float> logits);

  // Records a token (prompt or generated) in the penalty window. `token` must
  // be in [0, n_vocab) (checked): callers validate user-supplied ids first.
  void accept(int32_t token);

  // Forgets the accepted tokens and restarts the generator from the seed, so
  // a reset sampler repeats its draws exactly.
  void reset();

  const SamplingParams& params() const { return params_; }
  int32_t n_vocab() const { return n_vocab_; }

 private:
  struct Candidate {
    int32_t id;
    float logit;
    float p;
  };

  void apply_penalties();
  int32_t argmax() const;
  // Each filter works on candidates_[0, n_cur_) and shrinks n_cur_.
  void sort_candidates();
  void apply_top_k();
  void apply_top_p();
  void apply_min_p();
  int32_t draw();
  double next_uniform();  // in [0, 1), 53 random bits

  SamplingParams params_;
  int32_t n_vocab_;
  std::mt19937_64 rng_;

  std::vector<Candidate> candidates_;  // [n_vocab]
  int32_t n_cur_ = 0;                  // live candidates
  bool sorted_ = false;                // candidates_[0, n_cur_) sorted by logit desc, id asc

  // Penalty window: a ring of the last repeat_last_n accepted tokens and the
  // per-token counts inside it.
  std::vector<int32_t> window_;  // [repeat_last_n]
  int32_t window_len_ = 0;
  int32_t window_head_ = 0;      // next slot to write
  std::vector<int32_t> counts_;  // [n_vocab]
};

}  // namespace tandem::engine
