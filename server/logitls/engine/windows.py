"""Where a document too long for the context window is cut: one rule for every feature, and the
sliding windows that score a whole document. Plain integers and lists; no torch.

Completion, inline completion, generate and the lens's last window cut a document at the same token,
so they share its KV cache. The cut moves in blocks of a quarter window, so that while a user types at
the end of a long document the kept window (and its cache) stays the same for many keystrokes. The
tokenizer's BOS (its `lead`) stays in front of every window, as the model saw every text in training.
"""

from __future__ import annotations

from typing import Sequence


def lead_length(ids: Sequence[int], lead_ids: Sequence[int]) -> int:
    """How many of `ids`' first tokens are the tokenizer's lead (its BOS): 0 where it adds none."""
    n = len(lead_ids)
    return n if n and list(ids[:n]) == list(lead_ids) else 0


def window_start(n_tokens: int, text_window: int, room: int | None = None, lead: int = 0) -> int:
    """Where to cut a too-long token list so that what is left fits in `room` (default `text_window`)
    tokens; a smaller `room` cuts on the same grid."""
    room = max(lead + 1, text_window if room is None else room)
    if n_tokens <= room:
        return 0
    block = max(1, text_window // 4)
    start = lead + -(-(n_tokens - room) // block) * block
    return min(start, n_tokens - 1)


def cut(items: Sequence, start: int, lead: int) -> list:
    """items[start:], behind the first `lead` items."""
    return list(items[:lead]) + list(items[start:]) if start > 0 else list(items)


def sliding_spans(n_tokens: int, window: int, lead: int, stride: int | None, last_start: int) -> tuple[list, int]:
    """The windows before the last one that score a document of `n_tokens` tokens, as the transformers
    perplexity guide does: windows of `window` tokens start every `stride` (default half a window), each
    scoring what the earlier ones did not. Returns their (begin, end) spans and `handover`, the first
    token the last window (starting at `last_start`) scores: every token it scores has `window - stride`
    tokens of context inside it."""
    body = window - lead  # text tokens in a window that does not start the text
    stride = max(1, min(stride or window // 2, body))
    handover = min(n_tokens, last_start + max(1, body - stride)) if last_start > 0 else 0
    spans, covered = [], 0
    for begin in range(0, last_start, stride):
        end = min(begin + (window if begin == 0 else body), handover)
        if end > covered:
            spans.append((begin, end))
            covered = end
    return spans, handover
