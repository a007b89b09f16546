#include "runtime/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status.h"

namespace tandem::engine {
namespace {

absl::Status field_error(absl::string_view field, double value, absl::string_view want) {
  return absl::InvalidArgumentError(
      absl::StrCat("sampling parameter ", field, " = ", value, ": must be ", want));
}

// Larger logit first; the lower id breaks ties so the order (and hence every
// draw) is the same on every platform.
bool before(float a_logit, int32_t a_id, float b_logit, int32_t b_id) {
  if (a_logit != b_logit) return a_logit > b_logit;
  return a_id < b_id;
}

}  // namespace

absl::Status validate(const SamplingParams& p) {
  if (!std::isfinite(p.temperature) || p.temperature < 0.0f || p.temperature > 100.0f) {
    return field_error("temperature", p.temperature, "in [0, 100] (0: greedy)");
  }
  if (p.top_k < 0) return field_error("top_k", p.top_k, ">= 0 (0: off)");
  if (!std::isfinite(p.top_p) || p.top_p < 0.0f || p.top_p > 1.0f) {
    return field_error("top_p", p.top_p, "in [0, 1] (1: off)");
  }
  if (!std::isfinite(p.min_p) || p.min_p < 0.0f || p.min_p > 1.0f) {
    return field_error("min_p", p.min_p, "in [0, 1] (0: off)");
  }
  if (!std::isfinite(p.repeat_penalty) || p.repeat_penalty <= 0.0f || p.repeat_penalty > 100.0f) {
    return field_error("repeat_penalty", p.repeat_penalty, "in (0, 100] (1: off)");
  }
  if (!std::isfinite(p.frequency_penalty) || std::fabs(p.frequency_penalty) > 100.0f) {
    return field_error("frequency_penalty", p.frequency_penalty, "in [-100, 100] (0: off)");
  }
  if (!std::isfinite(p.presence_penalty) || std::fabs(p.presence_penalty) > 100.0f) {
    return field_error("presence_penalty", p.presence_penalty, "in [-100, 100] (0: off)");
  }
  if (p.repeat_last_n < 0 || p.repeat_last_n > kMaxRepeatLastN) {
    return field_error("repeat_last_n", p.repeat_last_n,
                       absl::StrCat("in [0, ", kMaxRepeatLastN, "] (0: penalties off)"));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params, int32_t n_vocab)
    : params_(params), n_vocab_(n_vocab), rng_(params.seed) {
  TANDEM_CHECK(validate(params).ok());
  TANDEM_CHECK(n_vocab > 0);
  candidates_.resize(static_cast<size_t>(n_vocab));
  window_.resize(static_cast<size_t>(params.repeat_last_n));
  counts_.assign(static_cast<size_t>(n_vocab), 0);
}

void Sampler::accept(int32_t token) {
  TANDEM_CHECK(token >= 0 && token < n_vocab_);
  if (window_.empty()) return;
  const int32_t cap = static_cast<int32_t>(window_.size());
  if (window_len_ == cap) {
    --counts_[static_cast<size_t>(window_[static_cast<size_t>(window_head_)])];
  } else {
    ++window_len_;
  }
  window_[static_cast<size_t>(window_head_)] = token;
  ++counts_[static_cast<size_t>(token)];
  window_head_ = (window_head_ + 1) % cap;
}

void Sampler::reset() {
  for (int32_t i = 0; i < window_len_; ++i)
    counts_[static_cast<size_t>(window_[static_cast<size_t>(i)])] = 0;
  window_len_ = 0;
  window_head_ = 0;
  rng_.seed(params_.seed);
}

double Sampler::next_uniform() {
  // The top 53 bits scaled by 2^-53: exact in a double, identical everywhere
  // (std::uniform_real_distribution is implementation-defined).
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

void Sampler::apply_penalties() {
  if (window_len_ == 0) return;
  const float rp = params_.repeat_penalty;
  const float fp = params_.frequency_penalty;
  const float pp = params_.presence_penalty;
  if (rp == 1.0f && fp == 0.0f && pp == 0.0f) return;
  // candidates_[t].id == t here. A token repeated in the window is penalized
  // once: its count goes to zero in a scratch pass, then is restored.
  for (int32_t i = 0; i < window_len_; ++i) {
    const int32_t t = window_[static_cast<size_t>(i)];
    int32_t& count = counts_[static_cast<size_t>(t)];
    if (count <= 0) continue;  // already done
    float& logit = candidates_[static_cast<size_t>(t)].logit;
    logit = logit > 0.0f ? logit / rp : logit * rp;
    logit -= static_cast<float>(count) * fp + pp;
    count = -count;
  }
  for (int32_t i = 0; i < window_len_; ++i) {
    int32_t& count = counts_[static_cast<size_t>(window_[static_cast<size_t>(i)])];
    if (count < 0) count = -count;
  }
}

int32_t Sampler::argmax() const {
  int32_t best = 0;
  for (int32_t i = 1; i < n_cur_; ++i) {
    const Candidate& c = candidates_[static_cast<size_t>(i)];
    const Candidate& b = candidates_[static_cast<size_t>(best)];
    if (before(c.logit, c.id, b.logit, b.id)) best = i;
  }
  return candidates_[static_cast<size_t>(best)].id;
}

void Sampler::sort_candidates() {
  if (sorted_) return;
  // std::sort is in place (introsort): no allocation, unlike stable_sort.
  std::sort(
      candidates_.begin(), candidates_.begin() + n_cur_,
      [](const Candidate& a, const Candidate& b) { return before(a.logit, a.id, b.logit, b.id); });
  sorted_ = true;
}

void Sampler::apply_top_k() {
  const int32_t k = params_.top_k;
  if (k <= 0 || k >= n_cur_) return;
  std::partial_sort(
      candidates_.begin(), candidates_.begin() + k, candidates_.begin() + n_cur_,
      [](const Candidate& a, const Candidate& b) { return before(a.logit, a.id, b.logit, b.id); });
  n_cur_ = k;
  sorted_ = true;
}

void Sampler::apply_top_p() {
  const float p = params_.top_p;
  if (p >= 1.0f || n_cur_ <= 1) return;
  sort_candidates();
  const float max_logit = candidates_[0].logit;
  if (!std::isfinite(max_logit)) return;  // no softmax; draw() takes the best
  double total = 0.0;
  for (int32_t i = 0; i < n_cur_; ++i) {
    Candidate& c = candidates_[static_cast<size_t>(i)];
    c.p = std::exp(c.logit - max_logit);
    total += c.p;
  }
  // The smallest prefix whose probability mass reaches p (at least one token).
  const double threshold = static_cast<double>(p) * total;
  double cum = 0.0;
  for (int32_t i = 0; i < n_cur_; ++i) {
    cum += candidates_[static_cast<size_t>(i)].p;
    if (cum >= threshold) {
      n_cur_ = i + 1;
      return;
    }
  }
}

void Sampler::apply_min_p() {
  const float min_p = params_.min_p;
  if (min_p <= 0.0f || n_cur_ <= 1) return;
  float max_logit = candidates_[0].logit;
  if (!sorted_) {
    for (int32_t i = 1; i < n_cur_; ++i) {
      max_logit = std::max(max_logit, candidates_[static_cast<size_t>(i)].logit);
    }
  }
  // p_i >= min_p * p_max  <=>  logit_i >= max_logit + log(min_p).
  const float min_logit = max_logit + std::log(min_p);
  int32_t kept = 0;
  for (int32_t i = 0; i < n_cur_; ++i) {
    const Candidate& c = candidates_[static_cast<size_t>(i)];
    if (c.logit >= min_logit) candidates_[static_cast<size_t>(kept++)] = c;
  }
  if (kept > 0) n_cur_ = kept;  // only when max_logit is -inf can nothing pass
}

int32_t Sampler::draw() {
  float max_logit = -std::numeric_limits<float>::infinity();
  for (int32_t i = 0; i < n_cur_; ++i) {
    max_logit = std::max(max_logit, candidates_[static_cast<size_t>(i)].logit);
  }
  // Degenerate rows (all -inf, or +inf present) have no softmax: take the best.
  if (!std::isfinite(max_logit)) return argmax();
  double total = 0.0;
  for (int32_t i = 0; i < n_cur_; ++i) {
    Candidate& c = candidates_[static_cast<size_t>(i)];
    c.p = std::exp(c.logit - max_logit);
    total += c.p;
  }
  const double target = next_uniform() * total;
  double cum = 0.0;
  for (int32_t i = 0; i < n_cur_; ++i) {
    cum += candidates_[static_cast<size_t>(i)].p;
    if (target < cum) return candidates_[static_cast<size_t>(i)].id;
  }
  // Rounding can leave target == total; the last token with mass takes it.
  for (int32_t i = n_cur_ - 1; i > 0; --i) {
    if (candidates_[static_cast<size_t>(i)].p > 0.0f) return candidates_[static_cast<size_t>(i)].id;
  }
  return candidates_[0].id;
}

int32_t Sampler::sample(std::span<const float> logits) {
  TANDEM_CHECK(static_cast<int64_t>(logits.size()) == n_vocab_);
  for (int32_t i = 0; i < n_vocab_; ++i) {
    const float l = logits[static_cast<size_t>(i)];
    // A NaN would break the sort's ordering; it can never be the best token.
    candidates_[static_cast<size_t>(i)] = {
        i, std::isnan(l) ? -std::numeric_limits<float>::infinity() : l, 0.0f};
  }
  n_cur_ = n_vocab_;
  sorted_ = false;
  apply_penalties();

  if (params_.temperature <= 0.0f) return argmax();

  apply_top_k();
  apply_top_p();
  apply_min_p();
  const float t = params_.temperature;
  if (t != 1.0f) {
    for (int32_t i = 0; i < n_cur_; ++i) candidates_[static_cast<size_t>(i)].logit /= t;
  }
  return draw();
}

}  // namespace tandem::engine
