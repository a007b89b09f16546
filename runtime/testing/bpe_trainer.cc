#include "runtime/testing/bpe_trainer.h"

#include <map>
#include <utility>

namespace tandem::testing {

std::vector<TrainingWord> count_words(const std::vector<std::vector<std::string>>& chunks) {
  std::map<std::vector<std::string>, int64_t> counts;  // ordered: deterministic output
  for (const auto& c : chunks) {
    if (!c.empty()) ++counts[c];
  }
  std::vector<TrainingWord> words;
  words.reserve(counts.size());
  for (auto& [symbols, count] : counts) words.push_back({symbols, count});
  return words;
}

std::vector<LearnedMerge> learn_merges(const std::vector<TrainingWord>& input, size_t max_merges) {
  std::vector<TrainingWord> words = input;
  std::vector<LearnedMerge> merges;
  while (merges.size() < max_merges) {
    std::map<std::pair<std::string, std::string>, int64_t> pairs;
    for (const TrainingWord& w : words) {
      for (size_t i = 0; i + 1 < w.symbols.size(); ++i) {
        pairs[{w.symbols[i], w.symbols[i + 1]}] += w.count;
      }
    }
    if (pairs.empty()) break;
    // std::map iterates in ascending key order, so the first maximum found
    // is the lexicographically smallest among equals.
    auto best = pairs.begin();
    for (auto it = pairs.begin(); it != pairs.end(); ++it) {
      if (it->second > best->second) best = it;
    }
    const auto [left, right] = best->first;
    const std::string merged = left + right;
    for (TrainingWord& w : words) {
      std::vector<std::string> out;
      out.reserve(w.symbols.size());
      for (size_t i = 0; i < w.symbols.size(); ++i) {
        if (i + 1 < w.symbols.size() && w.symbols[i] == left && w.symbols[i + 1] == right) {
          out.push_back(merged);
          ++i;
        } else {
          out.push_back(std::move(w.symbols[i]));
        }
      }
      w.symbols = std::move(out);
    }
    merges.push_back({left, right});
  }
  return merges;
}

}  // namespace tandem::testing
