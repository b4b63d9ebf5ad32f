"""Per-document KV slots: what the model has seen of each document, and how a new request reuses it.

A document's slot holds the token ids whose keys and values sit in its cache, the next-token logits of
the last few positions, and the scores computed so far. `feed` brings a slot to a new token list: it
keeps the prefix the two share, crops the cache to it (or starts over where a sliding-window layer
cannot be cropped), and feeds the rest in chunks through the model, scoring them where asked. The slots
live in an LRU (`DocumentSlots`): at most `limit` documents keep a cache.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .scoring import PositionScore, score_rows
from .types import Cancelled

StopCheck = Callable[[], bool]
PREFILL_CHUNK = 256  # tokens per forward during prefill: bounds logits memory and cancel latency
BULK_TOKENS = 16  # more new tokens than this make a feed a prefill (see `score_bulk`)
# Scoring needs every position's full-vocabulary logits, and log-softmax, ranks and top-k make a few
# tensors of that size: smaller chunks bound the memory (Performance in the README).
SCORING_CHUNK = 128
# Positions whose next-token logits a slot keeps (DocumentState.tail): token healing backs off at
# most TAIL_LOGITS - 1 tokens. Four rows of the LM head cost what one does on CPU (weights read once).
TAIL_LOGITS = 4


@dataclass
class DocumentState:
    """The model's view of one document: token ids whose keys/values sit in `kv`."""

    ids: list[int] = field(default_factory=list)
    kv: Any = None  # the model's cache (Model.new_cache), or None before the first feed
    # scores[i]: token i given ids[:i], or None / missing where tokens were fed without scoring.
    scores: list[PositionScore | None] = field(default_factory=list)
    last_logits: torch.Tensor | None = None  # next-token logits after ids, fp32
    # tail[p]: next-token logits after ids[:p + 1], for the last few positions fed (TAIL_LOGITS). Token
    # healing reads the distributions before the word at the cursor from here, and a backspace within
    # them needs no forward pass at all.
    tail: dict[int, torch.Tensor] = field(default_factory=dict)
    # The scores of document_scores' windows before the last one, by their token ids: hover and the
    # lens ask for the same text, and an edit near the end changes none of them.
    earlier_windows: dict[tuple[int, ...], list[PositionScore | None]] = field(default_factory=dict)

    def crop(self, keep: int) -> None:
        """Keep the first `keep` positions; or none, where the cache cannot be cropped (a sliding-window
        layer has dropped positions that the kept prefix needs): then everything is fed again."""
        if keep >= len(self.ids):
            return
        if keep == 0 or self.kv is None or not self.kv.crop(len(self.ids) - keep):
            self.kv = None
            keep = 0
        del self.ids[keep:]  # scores stay: feed already dropped those of changed tokens
        for position in [p for p in self.tail if p >= keep]:
            del self.tail[position]
        self.last_logits = self.tail.get(keep - 1)

    def can_crop(self, keep: int) -> bool:
        return self.kv is None or keep == 0 or self.kv.can_crop(len(self.ids) - keep)

    def append_step(self, token: int, logits: torch.Tensor) -> None:
        """Record one decoded token whose forward the caller just ran on `kv`."""
        self.ids.append(token)
        self.last_logits = self.tail[len(self.ids) - 1] = logits
        self.tail.pop(len(self.ids) - 1 - TAIL_LOGITS, None)


class DocumentSlots:
    """The documents that keep a cache, least recently used first."""

    def __init__(self, limit: int) -> None:
        self._slots: OrderedDict[str, DocumentState] = OrderedDict()
        self.limit = max(1, limit)

    def get(self, document: str) -> DocumentState:
        state = self._slots.pop(document, None) or DocumentState()
        self._slots[document] = state  # most recently used last
        self.resize(self.limit)
        return state

    def resize(self, limit: int) -> None:
        self.limit = max(1, limit)
        while len(self._slots) > self.limit:
            self._slots.popitem(last=False)

    def forget(self, document: str) -> None:
        self._slots.pop(document, None)

    def clear(self) -> None:
        self._slots.clear()

    def keys(self) -> list[str]:
        return list(self._slots)

    def __iter__(self):
        return iter(list(self._slots))

    def __getitem__(self, document: str) -> DocumentState:
        """A slot without touching its recency (for inspection)."""
        return self._slots[document]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@torch.inference_mode()
def feed(model: Any, state: DocumentState, ids: list[int], *, want_scores: bool, alternatives: int,
         should_stop: StopCheck | None, chunk_size: int = PREFILL_CHUNK, score_bulk: bool = False,
         logits_from: int | None = None) -> None:
    """Bring `state` to exactly `ids`, with next-token logits (and, if asked, every token's score).

    `logits_from`: also have state.tail hold the logits of every position from there to the end
    (at most TAIL_LOGITS positions), feeding again what is missing.

    `score_bulk`: score only when many tokens are fed (a prefill). A keystroke then feeds one
    token and leaves its score to the lens: on CPU a 2-token forward costs more than a 1-token one
    (GEMM instead of GEMV), and scoring the changed token would mean re-feeding the one before.
    """
    n = len(ids)
    common = common_prefix(state.ids, ids)
    del state.scores[common:]  # a score depends only on the tokens up to and including its own
    if score_bulk and n - common > BULK_TOKENS:
        want_scores = True
    start = common
    if want_scores:
        first_missing = next((i for i in range(1, n) if i >= len(state.scores) or state.scores[i] is None), n)
        # token i is scored by the logits at i - 1; with nothing missing, only new tokens are fed
        start = common if first_missing >= n else min(first_missing - 1, common)
    if logits_from is not None:
        missing = [p for p in range(max(logits_from, 0), n) if p >= common or p not in state.tail]
        if missing:
            start = min(start, missing[0])
    if start >= n:
        if len(state.ids) == n and state.last_logits is not None:
            return
        if n - 1 in state.tail and state.can_crop(n):
            state.crop(n)  # a backspace within the kept logits: nothing to feed
            return
        start = n - 1
    start = max(start, 0)
    if not state.can_crop(start):
        # A sliding-window layer has lost positions the kept prefix needs: everything is fed again,
        # which is a prefill, scored if prefills are.
        start = 0
        want_scores = want_scores or (score_bulk and n > BULK_TOKENS)
    state.crop(start)
    if state.kv is None:
        state.kv = model.new_cache()
    if want_scores:
        chunk_size = min(chunk_size, SCORING_CHUNK)
    position = len(state.ids)
    while position < n:
        if should_stop is not None and should_stop():
            raise Cancelled()
        chunk = ids[position : position + chunk_size]
        # without scores, the LM head runs on the last few positions only
        logits = model.forward(chunk, state.kv, 0 if want_scores else TAIL_LOGITS)
        state.ids.extend(chunk)
        kept = min(TAIL_LOGITS, len(chunk))
        for row in range(kept):  # copies: a view would keep the whole chunk's logits alive
            state.tail[position + len(chunk) - kept + row] = logits[logits.shape[0] - kept + row].clone()
        for old_position in [p for p in state.tail if p < position + len(chunk) - TAIL_LOGITS]:
            del state.tail[old_position]
        if want_scores:
            targets = ids[position + 1 : position + 1 + len(chunk)]
            if len(state.scores) < position + 1:
                state.scores.extend([None] * (position + 1 - len(state.scores)))
            del state.scores[position + 1 :]
            state.scores.extend(score_rows(logits[: len(targets)], targets, alternatives))
        state.last_logits = state.tail[position + len(chunk) - 1]
        position += len(chunk)
