"""Token healing: complete what the user typed, not the token boundary the cursor happens to sit on.

A text that ends in a space or half a word ends in the middle of what the model would write as one
token (` Paris`): asked for the next token, the model sees a boundary it never saw in training and
offers noise (`…is ` → `2`). Healing backs off the last tokens, conditions on the text before them
and keeps only continuations that spell what was typed.

The rule:
- Back off the last token always (a trailing space, newline or punctuation merges with what follows),
  and earlier tokens while they lie in the half-typed word: the trailing run of non-blank characters
  with the spaces or tabs before it, at most MAX_BACKOFF tokens, never a special token and never the
  first token of the window (something must be conditioned on).
- Candidates walk the backed-off tokens as they were written: after j of them (0 ≤ j < k), every token
  that extends the rest of the fragment; after all k, every token (the word is taken as typed). A
  candidate's probability is the product of its tokens' probabilities given the text before the
  fragment; its share is that over the mass of all such continuations. Paths that spell the fragment
  with other tokens than those written are not explored (they would cost a forward pass each).
- All the distributions needed are the ones the document's forward pass keeps (DocumentState.tail):
  healing costs no extra forward pass while typing at the end of a document.
"""

from __future__ import annotations

import bisect
import re

MAX_BACKOFF = 3
_WORD_AT_END = re.compile(r"[ \t]*[^\s]*\Z")


def word_region_start(text: str) -> int:
    """Where the half-typed word at the end of `text` starts, with the blanks before it."""
    return _WORD_AT_END.search(text).start()


def backoff(pieces: list[str], special: list[bool], text: str) -> int:
    """How many of the last tokens (their decoded `pieces`, ending `text`) to back off."""
    region_start = word_region_start(text)
    k, end = 0, len(text)
    while k < min(MAX_BACKOFF, len(pieces) - 1):
        i = len(pieces) - 1 - k
        start = end - len(pieces[i])
        if special[i] or start < 0 or text[start:end] != pieces[i] or (k > 0 and start < region_start):
            break
        k, end = k + 1, start
    return k


class VocabularyIndex:
    """Token texts sorted, to find every token that starts with a given text in O(log V + matches)."""

    def __init__(self, texts: list[str], usable: list[bool]) -> None:
        # a key sort on the strings (stable: equal texts keep their ids ascending) is much faster than
        # sorting (text, id) tuples, and the first healed menu waits on it (README, Performance)
        self.ids = sorted((i for i, (t, ok) in enumerate(zip(texts, usable)) if ok and t), key=texts.__getitem__)
        self.texts = [texts[i] for i in self.ids]

    def starting_with(self, prefix: str) -> tuple[int, int]:
        """The [lo, hi) slice of `ids` whose texts start with `prefix` and are longer than it."""
        lo = bisect.bisect_right(self.texts, prefix)  # skips the token equal to the prefix
        hi = bisect.bisect_left(self.texts, prefix + "\U0010ffff")
        return lo, max(lo, hi)
