"""Tokenize only the end of a long text: what a window needs, with the numbers of a full tokenization.

A request feeds at most a window of tokens from the end of the text, but where the window starts depends
on the total token count (windows.window_start). A long document keeps a cut per document: a character
offset `c`, the text before it (by length and hash) and how many tokens a full tokenization has before
it. While the text before the cut is unchanged, only `text[c:]` is tokenized, and its tokens are the
full tokenization's from there on, counted from the stored number. Only the first request (and the
first after an edit before the cut) tokenizes the whole text.

A cut is safe where the tokens after it do not depend on the text before it. That is checked, never
assumed: when a cut is made, the suffix's tokens must equal the full tokenization's; when it is used,
`text[c:]` and a suffix from an earlier boundary must agree on every token after `c`. Any disagreement
falls back to the full tokenization (which makes a new cut, further back where it must).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .windows import lead_length

# Texts shorter than this are tokenized whole (fast enough: about 10 ms on CPU).
MIN_CHARS = 20_000
CUTS_PER_DOCUMENT = 4
DOCUMENTS = 64
VERIFY_TOKENS = 16  # how far before a cut the second suffix starts (tokens)
TRIES = 4  # cuts tried, each further back, before a text goes without one


@dataclass
class Tail:
    """The full tokenization's tokens from index `first` to the end, with their offsets in the text;
    `first` is 0 where the whole text was tokenized (ids then start with the tokenizer's lead). `lead`:
    how many of the full tokenization's first tokens are the tokenizer's lead (windows.lead_length)."""

    ids: list[int]
    offsets: list[tuple[int, int]]
    first: int
    lead: int

    @property
    def total(self) -> int:
        return self.first + len(self.ids)


@dataclass(frozen=True)
class _Cut:
    chars: int  # the cut's character offset
    digest: int  # hash(text[:chars])
    tokens: int  # tokens of the full tokenization before the cut (the lead included)
    lead: int  # of them, the tokenizer's lead
    verify_from: int  # an earlier token boundary (characters) the check tokenizes from


class TailTokenizer:
    def __init__(self, vocabulary) -> None:
        self.vocabulary = vocabulary
        self._cuts: OrderedDict[str, list[_Cut]] = OrderedDict()

    def forget(self, document: str) -> None:
        self._cuts.pop(document, None)

    def tail(self, text: str, document: str, need: int) -> Tail:
        """At least the last `need` tokens of `text` as a full tokenization has them (all of them where
        the text is short, or no checked cut serves)."""
        if len(text) >= MIN_CHARS:
            for cut in reversed(self._cuts.get(document, [])):
                if cut.chars < len(text) and hash(text[: cut.chars]) == cut.digest:
                    tail = self._after(text, cut)
                    if tail is not None and len(tail.ids) >= need:
                        self._cut_later(text, document, tail, need)
                        return tail
        ids, offsets = self.vocabulary.encode(text)
        tail = Tail(ids, offsets, 0, lead_length(ids, self.vocabulary.lead_ids))
        if len(text) >= MIN_CHARS:
            self._cut_later(text, document, tail, need)
        return tail

    def _suffix(self, text: str, chars: int) -> tuple[list[int], list[tuple[int, int]]]:
        """text[chars:]'s tokens without the tokenizer's lead, offsets in `text`."""
        ids, offsets = self.vocabulary.encode(text[chars:])
        lead = len(self.vocabulary.lead_ids)
        if lead and ids[:lead] == self.vocabulary.lead_ids:
            ids, offsets = ids[lead:], offsets[lead:]
        return ids, [(begin + chars, end + chars) for begin, end in offsets]

    def _after(self, text: str, cut: _Cut) -> Tail | None:
        """The tokens after `cut`, where a suffix from an earlier boundary agrees on every one of them."""
        ids, offsets = self._suffix(text, cut.chars)
        earlier_ids, earlier_offsets = self._suffix(text, cut.verify_from)
        at = next((i for i, (begin, _) in enumerate(earlier_offsets) if begin >= cut.chars), None)
        if at is None or earlier_offsets[at][0] != cut.chars or (at and earlier_offsets[at - 1][1] > cut.chars):
            return None  # no token boundary at the cut here
        if earlier_ids[at:] != ids or earlier_offsets[at:] != offsets:
            return None
        return Tail(ids, offsets, cut.tokens, cut.lead)

    def _cut_later(self, text: str, document: str, tail: Tail, need: int) -> None:
        """Where the tail holds more than three windows' tokens, keep a cut one and a half windows from the end
        (the window moves on as the user types): checked against the tokens known here, moved further
        back on a disagreement."""
        if len(tail.ids) <= 3 * need:
            return
        index = len(tail.ids) - need - need // 2
        for _ in range(TRIES):
            if index <= tail.lead + VERIFY_TOKENS:
                return
            chars = tail.offsets[index][0]
            clean = tail.offsets[index - 1][1] <= chars and tail.offsets[index - 1][0] < chars
            if clean and self._suffix(text, chars) == (tail.ids[index:], tail.offsets[index:]):
                cut = _Cut(chars, hash(text[:chars]), tail.first + index, tail.lead,
                           tail.offsets[index - VERIFY_TOKENS][0])
                cuts = self._cuts.pop(document, [])
                self._cuts[document] = [*cuts, cut][-CUTS_PER_DOCUMENT:]
                while len(self._cuts) > DOCUMENTS:
                    self._cuts.popitem(last=False)
                return
            index -= max(1, need // 4)
