"""The surprisal lens (GLTR in the editor): buckets by rank, spans to colour, document numbers.

Shared by the language server (semantic tokens, diagnostics, code lens) and `logitls lens`;
knows nothing of torch or LSP. Input is the engine's per-token scores.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# GLTR's buckets: the token was in the model's top 10, top 100, top 1000, or beyond.
BUCKET_NAMES = ("likely", "plausible", "unlikely", "surprising")
DEFAULT_EDGES = (10, 100, 1000)
# Where an editor's lines end (LSP's rule): a span must not run over one, or its range would
# span two lines. Not str.splitlines's breaks: \f, \x85 or \u2028 sit inside an editor's line.
_LINE_END = re.compile(r"\r\n?|\n")


# The entropy view: how unsure the model was at a position (the entropy, in bits, of its next-token
# distribution), whatever token was written there. `confident` below 1 bit (about one clear choice),
# `leaning` below 3 bits (a handful, ~2-8 choices), `unsure` below 6 bits (~8-64), `lost` from 6 bits.
ENTROPY_NAMES = ("confident", "leaning", "unsure", "lost")
ENTROPY_EDGES = (1.0, 3.0, 6.0)
# The compare view (lens.compareModel): which model found the written token likelier, by
# log p(model) - log p(compare model) in nats; under 0.1 either way is left uncoloured.
COMPARE_NAMES = ("favoured", "stronglyFavoured", "disfavoured", "stronglyDisfavoured")
COMPARE_EDGES = (0.1, 1.0)


def compare_bucket_of(delta: float | None, edges: tuple[float, float] = COMPARE_EDGES) -> int | None:
    if delta is None or abs(delta) < edges[0]:
        return None
    return (0 if delta > 0 else 2) + (1 if abs(delta) >= edges[1] else 0)


def entropy_bucket_of(bits: float, edges: tuple[float, ...] = ENTROPY_EDGES) -> int:
    for index, edge in enumerate(edges):
        if bits < edge:
            return index
    return len(edges)


def bucket_of(rank: int, edges: tuple[int, ...] | list[int] = DEFAULT_EDGES) -> int:
    for index, edge in enumerate(edges):
        if rank <= edge:
            return index
    return len(edges)


@dataclass(frozen=True)
class Span:
    """A stretch of document text to colour for one token (or several overlapping byte pieces)."""

    start: int  # character offsets in the document
    end: int
    score: object  # the TokenScore of the least likely token in the span
    bucket: int


def spans(scores) -> list[list]:
    """Non-overlapping [start, end, score] spans, one per scored token: byte-level tokens that share
    one character (an emoji split in two) are merged, keeping the least likely of them."""
    merged: list[list] = []  # [start, end, score]
    for score in scores.tokens:
        if score.rank is None or score.end <= score.start:
            continue
        if merged and score.start < merged[-1][1]:
            last = merged[-1]
            last[1] = max(last[1], score.end)
            if score.rank > last[2].rank:
                last[2] = score
            continue
        merged.append([score.start, score.end, score])
    return merged


def span_bucket(score, edges=DEFAULT_EDGES, view: str = "rank") -> int | None:
    """The bucket a token is coloured by: its rank (`rank` view, 0-3 = BUCKET_NAMES) or the entropy
    at its position (`entropy` view, 0-3 = ENTROPY_NAMES; None where the entropy is unknown)."""
    if view == "entropy":
        return None if score.entropy_bits is None else entropy_bucket_of(score.entropy_bits)
    if view == "compare":
        return compare_bucket_of(score.compare_delta)
    return bucket_of(score.rank, edges)


def visible_spans(text: str, scores, edges=DEFAULT_EDGES, view: str = "rank") -> list[Span]:
    out = []
    for start, end, score in spans(scores):
        bucket = span_bucket(score, edges, view)
        if bucket is None:
            continue
        line_start = start
        for line_break in [*_LINE_END.finditer(text, start, end), None]:
            piece = text[line_start:line_break.start() if line_break else end]
            stripped_start = line_start + (len(piece) - len(piece.lstrip()))
            stripped_end = line_start + len(piece.rstrip())
            if stripped_end > stripped_start:
                out.append(Span(stripped_start, stripped_end, score, bucket))
            if line_break:
                line_start = line_break.end()
    return out


@dataclass(frozen=True)
class DocumentStats:
    tokens: int  # all tokens of the document
    scored_tokens: int  # those with a probability (all but the first, unless a BOS precedes it)
    perplexity: float | None
    mean_surprisal_bits: float | None
    truncated: bool  # scored with a sliding window

    def to_json(self) -> dict:
        return {"tokens": self.tokens, "scoredTokens": self.scored_tokens, "perplexity": self.perplexity,
                "meanSurprisalBits": self.mean_surprisal_bits, "slidingWindow": self.truncated}


def document_stats(scores) -> DocumentStats:
    logprobs = [s.logprob for s in scores.tokens if s.logprob is not None]
    if not logprobs:
        return DocumentStats(len(scores.tokens), 0, None, None, scores.truncated)
    mean_nll = -sum(logprobs) / len(logprobs)
    return DocumentStats(len(scores.tokens), len(logprobs), math.exp(mean_nll), mean_nll / math.log(2),
                         scores.truncated)


def decision_points(scores, max_margin: float) -> list:
    """Positions where the model's top two choices were within `max_margin` of each other in
    probability: the places a sampler could as well have gone the other way."""
    return [s for s in scores.tokens if s.margin is not None and s.margin < max_margin and s.end > s.start]


# -- scoring a selection --------------------------------------------------------------------


class EmptySelection(ValueError):
    """The selection holds no token with a score."""


@dataclass(frozen=True)
class SelectionScore:
    """How likely a stretch of a document was, given all text before it (from the document's scores)."""

    start: int  # the stretch actually scored: from the first counted token's start ...
    end: int  # ... to the last one's end (character offsets in the document)
    tokens: int  # tokens counted
    logprob: float  # natural log: the sum over the counted tokens
    bits_per_token: float
    perplexity: float
    least_likely: object  # the TokenScore with the lowest probability
    truncated: bool  # the document was scored with a sliding window

    @property
    def bits(self) -> float:
        return -self.logprob / math.log(2)

    def to_json(self, text: str) -> dict:
        worst = self.least_likely
        return {
            "start": self.start, "end": self.end, "text": text[self.start:self.end], "tokens": self.tokens,
            "logprob": self.logprob, "bits": self.bits, "bitsPerToken": self.bits_per_token,
            "perplexity": self.perplexity, "slidingWindow": self.truncated,
            "leastLikely": {"text": worst.token.text, "id": worst.token.id, "start": worst.start, "end": worst.end,
                            "prob": worst.prob, "logprob": worst.logprob, "rank": worst.rank,
                            "bits": worst.surprisal_bits},
        }


def tokens_in(text: str, scores, start: int, end: int) -> list:
    """The tokens of `text` that lie inside the selection [start, end).

    A token counts when its characters, leaving out whitespace at its ends, lie inside the selection:
    a token that straddles an edge by its leading space (GPT-2's " fox" when "fox" is selected) counts;
    one that straddles an edge by any other character does not (its probability is that of text
    outside the selection too). A token of whitespace only counts when it lies wholly inside.
    """
    out = []
    for score in scores.tokens:
        piece = text[score.start:score.end]
        core_start = score.start + (len(piece) - len(piece.lstrip())) if piece.strip() else score.start
        core_end = score.start + len(piece.rstrip()) if piece.strip() else score.end
        if score.end > score.start and start <= core_start and core_end <= end:
            out.append(score)
    return out


def score_selection(text: str, scores, start: int, end: int) -> SelectionScore:
    """log p(selection | text before it): the sum of the log-probabilities of the tokens inside it
    (see `tokens_in`), read from the document's scores. EmptySelection where none has a score."""
    inside = [s for s in tokens_in(text, scores, start, end) if s.logprob is not None]
    if not inside:
        raise EmptySelection(f"no scored token lies inside characters {start}-{end} (a token counts when it lies "
                             f"inside the selection; the document's first token has no score)")
    logprob = sum(s.logprob for s in inside)
    mean_nll = -logprob / len(inside)
    worst = min(inside, key=lambda s: s.logprob)
    return SelectionScore(inside[0].start, inside[-1].end, len(inside), logprob, mean_nll / math.log(2),
                          math.exp(mean_nll), worst, scores.truncated)


def selection_summary(score: SelectionScore, text: str) -> str:
    worst = score.least_likely
    return (f"{score.tokens} tokens: {score.bits:.1f} bits in all, {score.bits_per_token:.2f} bits/token, "
            f"perplexity {score.perplexity:.2f}; least likely {(worst.token.text.strip() or worst.token.text)!r} "
            f"(p={worst.prob:.2g}, rank {worst.rank})")


def comparison_summary(a: SelectionScore, b: SelectionScore) -> str:
    difference = a.bits_per_token - b.bits_per_token
    if abs(difference) < 0.005:
        return f"A and B are equally surprising ({a.bits_per_token:.2f} bits/token)"
    which = "less" if difference > 0 else "more"
    return (f"B is {abs(difference):.2f} bits/token {which} surprising than A "
            f"({b.bits_per_token:.2f} vs {a.bits_per_token:.2f})")
