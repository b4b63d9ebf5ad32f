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


def spans(scores, edges=DEFAULT_EDGES) -> list[Span]:
    """Non-overlapping spans, one per scored token, trimmed of surrounding whitespace and cut at
    line ends (editors colour words, not the space before them, and a range cannot cross lines).

    Byte-level tokens that share one character (an emoji split in two) are merged, keeping the
    least likely of them.
    """
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


def visible_spans(text: str, scores, edges=DEFAULT_EDGES) -> list[Span]:
    out = []
    for start, end, score in spans(scores, edges):
        bucket = bucket_of(score.rank, edges)
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
