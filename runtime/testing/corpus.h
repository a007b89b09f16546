// A few paragraphs of plain English (ASCII only), written for this project,
// on which the test vocabularies learn their merges. Changing this text
// changes every generated vocabulary, so treat it as frozen.
#pragma once

#include <string_view>

namespace tandem::testing {

inline constexpr std::string_view kTrainingText =
    "The little town sat where the river turned toward the sea. Every morning the "
    "baker opened his shop before the sun was up, and the smell of fresh bread "
    "drifted over the water to the boats that were getting ready to leave. The "
    "fishermen said that they could find their way home in the fog by that smell "
    "alone, and nobody in the town had ever thought to doubt them.\n\n"
    "In the spring of 1987 a young teacher came to live in the house at the end of "
    "the street. She brought with her three boxes of books, a bicycle with a "
    "basket, and a small black cat that would not stay inside. The children liked "
    "her at once. She told them stories about cities they had never seen, about "
    "machines that could think, and about people who had walked across mountains "
    "to learn something new. When they asked her why she had chosen such a quiet "
    "place, she only smiled and said that quiet places are where you can hear "
    "yourself think.\n\n"
    "Not everyone was pleased. The old mayor, who had run the town for 24 years, "
    "did not trust people from the city. He thought that new ideas were like "
    "weather: you could not stop them, but you could close your windows. He wrote "
    "long letters to the school board, and each letter was longer than the one "
    "before it. The board read them, thanked him, and did nothing at all.\n\n"
    "By the end of the first year the school had a garden, a library with 300 "
    "books, and a clock that the older students had built from parts of an old "
    "radio. It kept good time, most of the time. On the last day before summer, "
    "the whole town came to see what the children had made. Even the mayor came, "
    "though he stood near the door and said very little. Later that evening he "
    "was seen walking by the river with a book under his arm.\n\n"
    "What does it mean to learn something? It isn't only remembering words or "
    "numbers. It's the slow work of noticing, asking questions, and being willing "
    "to be wrong. The teacher used to say: \"A good question is worth more than a "
    "quick answer.\" Years later, many of her students still said the same thing "
    "to their own children, who laughed and asked why.\n";

}  // namespace tandem::testing
