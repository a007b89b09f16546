// Stop strings over streamed text: passes text through until one of the stop
// strings appears, and holds back a tail that might still become one, so a
// client never receives the beginning of a stop string it asked to cut.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tandem::engine {

class StopMatcher {
 public:
  // Empty strings in `stops` are ignored.
  explicit StopMatcher(std::vector<std::string> stops);

  // Appends `text` and returns what can be released: everything before a
  // stop string once one matched (then matched() is true and later pushes
  // return ""), otherwise all but the longest tail that begins a stop string.
  std::string push(std::string_view text);
  // The held-back tail (when generation ends for another reason); resets it.
  std::string flush();

  bool matched() const { return matched_index_ >= 0; }
  // The stop string that matched ("" when none).
  std::string_view matched_stop() const;

 private:
  std::vector<std::string> stops_;
  std::string held_;
  int matched_index_ = -1;
};

}  // namespace tandem::engine
