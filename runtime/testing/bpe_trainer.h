// A small, deterministic byte-pair-encoding trainer for the generated test
// vocabularies. It is the textbook greedy algorithm (count adjacent pairs,
// merge the most frequent, repeat): the corpus is a few kilobytes, so clarity
// beats the incremental bookkeeping a real trainer needs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tandem::testing {

// A pre-tokenized chunk of the corpus as its initial symbols, and how often it occurs.
struct TrainingWord {
  std::vector<std::string> symbols;
  int64_t count = 1;
};

struct LearnedMerge {
  std::string left;
  std::string right;
};

// Learns merges in rank order until `max_merges` or until every word is one
// symbol. The most frequent pair wins; ties go to the lexicographically
// smallest (left, right), so the result depends only on the input.
std::vector<LearnedMerge> learn_merges(const std::vector<TrainingWord>& words, size_t max_merges);

// Groups identical chunks: each entry of `chunks` is one occurrence.
std::vector<TrainingWord> count_words(const std::vector<std::vector<std::string>>& chunks);

}  // namespace tandem::testing
