#include "runtime/engine/stop_matcher.h"

#include <string>

#include "gtest/gtest.h"

namespace tandem::engine {
namespace {

TEST(StopMatcher, PassesTextThroughWithoutStops) {
  StopMatcher m({});
  EXPECT_EQ(m.push("hello"), "hello");
  EXPECT_EQ(m.push(" world"), " world");
  EXPECT_FALSE(m.matched());
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, HoldsBackAPossibleStopUntilDecided) {
  StopMatcher m({"END"});
  EXPECT_EQ(m.push("abc E"), "abc ");
  EXPECT_EQ(m.push("N"), "");
  EXPECT_EQ(m.push("x"), "ENx");  // not a stop after all
  EXPECT_FALSE(m.matched());
}

TEST(StopMatcher, CutsAtTheStopAcrossPushes) {
  StopMatcher m({"END", "\n\n"});
  EXPECT_EQ(m.push("one EN"), "one ");
  EXPECT_EQ(m.push("D two"), "");
  EXPECT_TRUE(m.matched());
  EXPECT_EQ(m.matched_stop(), "END");
  EXPECT_EQ(m.push("more"), "");
}

TEST(StopMatcher, EarliestMatchWins) {
  StopMatcher m({"cd", "b"});
  EXPECT_EQ(m.push("abcd"), "a");
  EXPECT_EQ(m.matched_stop(), "b");
}

TEST(StopMatcher, FlushReleasesTheHeldTail) {
  StopMatcher m({"<stop>"});
  EXPECT_EQ(m.push("text <st"), "text ");
  EXPECT_EQ(m.flush(), "<st");
  EXPECT_FALSE(m.matched());
}

TEST(StopMatcher, NeverSplitsAUtf8Character) {
  StopMatcher m({"\xC3\xA9t\xC3\xA9"});  // "été"
  const std::string out = m.push("caf\xC3\xA9");
  EXPECT_EQ(out, "caf");
  EXPECT_EQ(m.push("!"), "\xC3\xA9!");
}

TEST(StopMatcher, IgnoresEmptyStops) {
  StopMatcher m({"", "x"});
  EXPECT_EQ(m.push("ab"), "ab");
  EXPECT_EQ(m.push("x"), "");
  EXPECT_TRUE(m.matched());
}

}  // namespace
}  // namespace tandem::engine
