#include "runtime/engine/sampler.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <new>
#include <random>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

// Counts every global allocation so a test can prove the hot path makes none.
namespace {
std::atomic<int64_t> g_allocations{0};

// The helpers are out of line so GCC 12 does not pair malloc/free across the
// replaced operators and report a (false) mismatched new/delete.
[[gnu::noinline]] void* counted_malloc(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n == 0 ? 1 : n);
}
[[gnu::noinline]] void counted_free(void* p) { std::free(p); }
}  // namespace

void* operator new(std::size_t n) {
  if (void* p = counted_malloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }

namespace tandem::engine {
namespace {

using ::testing::HasSubstr;

SamplingParams neutral(float temperature = 1.0f, uint64_t seed = 7) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = seed;
  return p;
}

// Logits whose softmax is exactly `probs` (up to rounding).
std::vector<float> logits_of(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(static_cast<float>(std::log(p)));
  return l;
}

std::set<int32_t> observed(Sampler& s, const std::vector<float>& logits, int draws) {
  std::set<int32_t> seen;
  for (int i = 0; i < draws; ++i) seen.insert(s.sample(logits));
  return seen;
}

std::vector<float> random_logits(int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> l(static_cast<size_t>(n));
  for (auto& x : l)
    x = static_cast<float>(static_cast<double>(rng() >> 11) * 0x1.0p-53 * 8.0 - 4.0);
  return l;
}

TEST(Sampler, GreedyPicksArgmaxLowestIdOnTies) {
  Sampler s(neutral(0.0f), 6);
  EXPECT_EQ(s.sample(std::vector<float>{0.1f, 3.0f, -2.0f, 3.0f, 2.9f, 3.0f}), 1);
  EXPECT_EQ(s.sample(std::vector<float>{-5.0f, -4.0f, -4.5f, -4.0f, -9.0f, -4.0f}), 1);
  EXPECT_EQ(s.sample(std::vector<float>{7.0f, 7.0f, 7.0f, 7.0f, 7.0f, 7.0f}), 0);
  EXPECT_EQ(s.sample(std::vector<float>{0, 0, 0, 0, 0, 1}), 5);
}

TEST(Sampler, GreedyIgnoresNaN) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Sampler s(neutral(0.0f), 4);
  EXPECT_EQ(s.sample(std::vector<float>{nan, 1.0f, nan, 2.0f}), 3);
  Sampler t(neutral(1.0f), 4);
  for (int i = 0; i < 50; ++i) {
    int32_t tok = t.sample(std::vector<float>{nan, 1.0f, nan, 2.0f});
    EXPECT_TRUE(tok == 1 || tok == 3) << tok;
  }
}

TEST(Sampler, TopK1EqualsGreedy) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const auto logits = random_logits(300, seed);
    SamplingParams p = neutral(1.3f, seed);
    p.top_k = 1;
    Sampler top1(p, 300);
    Sampler greedy(neutral(0.0f), 300);
    EXPECT_EQ(top1.sample(logits), greedy.sample(logits));
  }
}

TEST(Sampler, SeededDrawsAreReproducible) {
  SamplingParams p;  // the defaults: every filter on
  p.seed = 1234;
  const auto logits = random_logits(1000, 5);
  Sampler a(p, 1000), b(p, 1000);
  std::vector<int32_t> first;
  for (int i = 0; i < 200; ++i) {
    const int32_t ta = a.sample(logits);
    EXPECT_EQ(ta, b.sample(logits));
    first.push_back(ta);
  }
  a.reset();
  for (int i = 0; i < 200; ++i) EXPECT_EQ(a.sample(logits), first[static_cast<size_t>(i)]);

  p.seed = 4321;
  Sampler c(p, 1000);
  int same = 0;
  for (int i = 0; i < 200; ++i) same += c.sample(logits) == first[static_cast<size_t>(i)];
  EXPECT_LT(same, 200);
}

TEST(Sampler, SeedPinsTheSequence) {
  // Pins the generator and the bits-to-uniform conversion: these values must
  // not change across platforms or releases (a seed is a user-visible promise).
  const auto logits = logits_of({0.1, 0.2, 0.3, 0.4});
  Sampler s(neutral(1.0f, 42), 4);
  std::vector<int32_t> got;
  for (int i = 0; i < 12; ++i) got.push_back(s.sample(logits));
  std::mt19937_64 rng(42);
  std::vector<int32_t> want;
  for (int i = 0; i < 12; ++i) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    want.push_back(u < 0.1 ? 0 : u < 0.3 ? 1 : u < 0.6 ? 2 : 3);
  }
  EXPECT_EQ(got, want);
}

TEST(Sampler, TopKKeepsTheKBest) {
  SamplingParams p = neutral(5.0f);  // flatten, so every kept token shows up
  p.top_k = 3;
  Sampler s(p, 6);
  EXPECT_EQ(observed(s, {1.0f, 4.0f, 2.0f, 3.0f, 0.0f, 2.5f}, 2000), (std::set<int32_t>{1, 3, 5}));
  // A tie at the boundary keeps the lower id.
  EXPECT_EQ(observed(s, {1.0f, 2.0f, 2.0f, 3.0f, 2.0f, 0.0f}, 2000), (std::set<int32_t>{1, 2, 3}));
}

TEST(Sampler, TopPKeepsSmallestSetReachingP) {
  const auto logits = logits_of({0.05, 0.5, 0.15, 0.3});
  auto kept = [&](float top_p) {
    SamplingParams p = neutral(1.0f);
    p.top_p = top_p;
    Sampler s(p, 4);
    return observed(s, logits, 4000);
  };
  EXPECT_EQ(kept(0.4f), (std::set<int32_t>{1}));
  EXPECT_EQ(kept(0.5f - 1e-4f), (std::set<int32_t>{1}));
  EXPECT_EQ(kept(0.75f), (std::set<int32_t>{1, 3}));
  EXPECT_EQ(kept(0.9f), (std::set<int32_t>{1, 3, 2}));
  EXPECT_EQ(kept(0.99f), (std::set<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(kept(0.0f), (std::set<int32_t>{1}));
}

TEST(Sampler, MinPDropsTokensBelowFractionOfMax) {
  const auto logits = logits_of({0.5, 0.2, 0.1, 0.04, 0.16});
  auto kept = [&](float min_p) {
    SamplingParams p = neutral(1.0f);
    p.min_p = min_p;
    Sampler s(p, 5);
    return observed(s, logits, 4000);
  };
  EXPECT_EQ(kept(0.15f), (std::set<int32_t>{0, 1, 2, 4}));  // threshold 0.075
  EXPECT_EQ(kept(0.35f), (std::set<int32_t>{0, 1}));        // threshold 0.175
  EXPECT_EQ(kept(1.0f), (std::set<int32_t>{0}));
  EXPECT_EQ(kept(0.01f), (std::set<int32_t>{0, 1, 2, 3, 4}));
}

TEST(Sampler, FiltersComposeInLlamaCppOrder) {
  // top_k 3 leaves {0,1,2}; top_p 0.7 of the renormalized mass (0.4/0.7,
  // 0.2/0.7, ...) keeps {0,1}; min_p 0.6 then drops 1 (0.2 < 0.6 * 0.4).
  const auto logits = logits_of({0.4, 0.2, 0.1, 0.05, 0.25 - 1e-3});
  SamplingParams p = neutral(1.0f);
  p.top_k = 3;
  p.top_p = 0.7f;
  Sampler s(p, 5);
  EXPECT_EQ(observed(s, logits, 3000), (std::set<int32_t>{0, 4}));
  p.min_p = 0.7f;
  Sampler t(p, 5);
  EXPECT_EQ(observed(t, logits, 3000), (std::set<int32_t>{0}));
}

TEST(Sampler, RepeatPenaltyFollowsLlamaCppRule) {
  SamplingParams p = neutral(0.0f);
  p.repeat_penalty = 2.0f;
  Sampler s(p, 4);
  const std::vector<float> pos = {2.0f, 1.9f, -1.0f, -1.1f};
  EXPECT_EQ(s.sample(pos), 0);
  s.accept(0);
  EXPECT_EQ(s.sample(pos), 1);  // 2.0 / 2 = 1.0 < 1.9
  s.reset();
  const std::vector<float> neg = {-5.0f, -1.0f, -1.5f, -9.0f};
  EXPECT_EQ(s.sample(neg), 1);
  s.accept(1);
  s.accept(1);                  // repeated in the window: still penalized once
  EXPECT_EQ(s.sample(neg), 2);  // -1 * 2 = -2 < -1.5
  s.accept(2);
  EXPECT_EQ(s.sample(neg), 1);  // -2 vs -3
}

TEST(Sampler, FrequencyAndPresencePenalties) {
  SamplingParams p = neutral(0.0f);
  p.frequency_penalty = 0.25f;
  Sampler f(p, 3);
  const std::vector<float> l = {1.0f, 0.6f, 0.0f};
  f.accept(0);
  EXPECT_EQ(f.sample(l), 0);  // 0.75 > 0.6
  f.accept(0);
  EXPECT_EQ(f.sample(l), 1);  // 0.5 < 0.6
  f.accept(1);
  f.accept(1);
  f.accept(1);
  EXPECT_EQ(f.sample(l), 0);  // 0.5 vs 0.6 - 0.75

  p.frequency_penalty = 0.0f;
  p.presence_penalty = 0.5f;
  Sampler pr(p, 3);
  for (int i = 0; i < 5; ++i) pr.accept(0);
  EXPECT_EQ(pr.sample(l), 1);  // 0.5 < 0.6: presence does not grow with count
  pr.accept(1);
  EXPECT_EQ(pr.sample(l), 0);
}

TEST(Sampler, PenaltyWindowForgetsOldTokens) {
  SamplingParams p = neutral(0.0f);
  p.repeat_penalty = 10.0f;
  p.repeat_last_n = 2;
  Sampler s(p, 3);
  const std::vector<float> l = {3.0f, 2.0f, 1.0f};
  s.accept(0);
  EXPECT_EQ(s.sample(l), 1);
  s.accept(2);
  EXPECT_EQ(s.sample(l), 1);
  s.accept(2);  // 0 has left the window
  EXPECT_EQ(s.sample(l), 0);

  p.repeat_last_n = 0;  // penalties off
  Sampler off(p, 3);
  off.accept(0);
  EXPECT_EQ(off.sample(l), 0);
}

// Draw counts against the softmax of logits / t, each within 5 sigma.
void expect_matches_softmax(float temperature) {
  const int n = 12;
  const auto logits = random_logits(n, 99);
  std::vector<double> probs(n);
  double total = 0.0;
  for (int i = 0; i < n; ++i)
    total += probs[static_cast<size_t>(i)] = std::exp(logits[static_cast<size_t>(i)] / temperature);
  for (auto& q : probs) q /= total;

  Sampler s(neutral(temperature, 2024), n);
  const int draws = 200000;
  std::vector<int> counts(n, 0);
  for (int i = 0; i < draws; ++i) ++counts[static_cast<size_t>(s.sample(logits))];
  for (int i = 0; i < n; ++i) {
    const double q = probs[static_cast<size_t>(i)];
    const double mean = draws * q;
    const double sigma = std::sqrt(draws * q * (1 - q));
    EXPECT_NEAR(counts[static_cast<size_t>(i)], mean, 5 * sigma + 1)
        << "token " << i << " at temperature " << temperature;
  }
}

TEST(Sampler, Temperature1MatchesSoftmax) { expect_matches_softmax(1.0f); }
TEST(Sampler, Temperature05MatchesSharperSoftmax) { expect_matches_softmax(0.5f); }

TEST(Sampler, SampleAndAcceptDoNotAllocate) {
  const int n = 5000;
  SamplingParams p;  // every filter on
  p.top_k = 0;       // full sort for top_p
  p.repeat_penalty = 1.1f;
  p.frequency_penalty = 0.1f;
  p.presence_penalty = 0.1f;
  p.repeat_last_n = 16;
  Sampler s(p, n);
  SamplingParams g = p;
  g.temperature = 0.0f;
  Sampler greedy(g, n);
  p.top_k = 40;
  Sampler topk(p, n);
  const auto logits = random_logits(n, 3);

  int64_t before = g_allocations.load();
  { Sampler probe(p, n); }
  ASSERT_GT(g_allocations.load(), before) << "the counting operator new is not in use";

  before = g_allocations.load();
  for (int i = 0; i < 100; ++i) {
    s.accept(s.sample(logits));
    greedy.accept(greedy.sample(logits));
    topk.accept(topk.sample(logits));
  }
  s.reset();
  const int64_t after = g_allocations.load();
  EXPECT_EQ(after - before, 0);
}

TEST(Sampler, ValidateNamesTheField) {
  EXPECT_TRUE(validate(SamplingParams{}).ok());
  EXPECT_TRUE(validate(neutral(0.0f)).ok());
  struct Case {
    const char* field;
    void (*mutate)(SamplingParams&);
  };
  const Case cases[] = {
      {"temperature", [](SamplingParams& p) { p.temperature = -0.5f; }},
      {"temperature", [](SamplingParams& p) { p.temperature = 101.0f; }},
      {"temperature", [](SamplingParams& p) { p.temperature = std::nanf(""); }},
      {"top_k", [](SamplingParams& p) { p.top_k = -1; }},
      {"top_p", [](SamplingParams& p) { p.top_p = -0.1f; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 1.5f; }},
      {"min_p", [](SamplingParams& p) { p.min_p = -0.1f; }},
      {"min_p", [](SamplingParams& p) { p.min_p = 2.0f; }},
      {"repeat_penalty", [](SamplingParams& p) { p.repeat_penalty = 0.0f; }},
      {"repeat_penalty", [](SamplingParams& p) { p.repeat_penalty = 1000.0f; }},
      {"frequency_penalty", [](SamplingParams& p) { p.frequency_penalty = 101.0f; }},
      {"frequency_penalty",
       [](SamplingParams& p) { p.frequency_penalty = -std::numeric_limits<float>::infinity(); }},
      {"presence_penalty", [](SamplingParams& p) { p.presence_penalty = -200.0f; }},
      {"repeat_last_n", [](SamplingParams& p) { p.repeat_last_n = -1; }},
      {"repeat_last_n", [](SamplingParams& p) { p.repeat_last_n = kMaxRepeatLastN + 1; }},
  };
  for (const Case& c : cases) {
    SamplingParams p;
    c.mutate(p);
    const absl::Status st = validate(p);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(st.message(), HasSubstr(c.field));
  }
}

}  // namespace
}  // namespace tandem::engine
