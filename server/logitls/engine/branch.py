"""Branching: take another token where a text has one, and continue greedily from there (Loom).

`branch_region` says which part of the original text a branch replaces: the token and what follows
it up to the end of its line (`line`), of its sentence (`sentence`), or the token alone (`tokens`).
`continue_branch` writes the replacement: the alternative token's text, then the greedy continuation
of `text[:token_start] + alternative` until the same boundary (or `max_new_tokens`, or EOS). Text after
the region is kept. Any engine with `greedy(text, max_new_tokens=, document=, should_stop=)` works
(the local one reuses the document's KV cache). No torch and no LSP types here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

UNTIL = ("line", "sentence", "tokens")

# A sentence ends at . ! ? or … (any run of them), with closing quotes or brackets kept with it.
_SENTENCE_END = r"[.!?…]+[\"'”’)\]]*"
_END_BEFORE_SPACE = re.compile(_SENTENCE_END + r"(?=\s)")
_END_AT_TEXT_END = re.compile(_SENTENCE_END + r"$")


@dataclass(frozen=True)
class BranchResult:
    new_text: str  # replaces text[start:end]: the alternative, then the continuation
    start: int
    end: int
    generated_tokens: int
    stop: str  # "line" | "sentence" | "length" | "eos" | "timeout"


def _sentence_end(text: str, at_end_of_text: bool) -> int | None:
    """Where the first sentence in `text` ends (after its punctuation), or None if it goes on.
    Punctuation at the very end counts only when nothing more will come (`at_end_of_text`): `3.` may
    become `3.5`."""
    match = _END_BEFORE_SPACE.search(text)
    if match:
        return match.end()
    if at_end_of_text:
        match = _END_AT_TEXT_END.search(text)
        if match:
            return match.end()
    return None


def boundary(text: str, until: str, at_end_of_text: bool) -> int | None:
    """Where the unit `until` ends in `text` (which starts where the unit goes on), or None if it goes on."""
    newline = text.find("\n")
    if until == "line":
        return newline if newline >= 0 else None
    if until == "sentence":
        sentence = _sentence_end(text if newline < 0 else text[:newline], at_end_of_text or newline >= 0)
        if sentence is not None:
            return sentence
        return newline if newline >= 0 else None
    return None


def branch_region(text: str, token_start: int, token_end: int, until: str) -> tuple[int, int]:
    """The span of `text` a branch at the token text[token_start:token_end] replaces."""
    if until not in UNTIL:
        raise ValueError(f"until must be one of {UNTIL}, got {until!r}")
    if until == "tokens":
        return token_start, token_end
    rest = text[token_end:]
    end = boundary(rest, until, at_end_of_text=True)
    return token_start, token_end + (len(rest) if end is None else end)


def continue_branch(engine, text: str, token_start: int, token_end: int, alternative: str, *, until: str = "line",
                    max_new_tokens: int = 64, document: str = "", should_stop: Callable[[], bool] | None = None,
                    deadline_passed: Callable[[], bool] | None = None,
                    on_step: Callable[[str, int], None] | None = None, sampling: Any = None) -> BranchResult:
    """Replace the token text[token_start:token_end] by `alternative` and continue greedily (or sampled,
    with `sampling`, a SamplingParams).

    `until`: `line` stops before the first newline the model writes, `sentence` after the first sentence
    end (or before a newline), `tokens` after `max_new_tokens` only. `max_new_tokens` caps every mode.
    `on_step(text_so_far, tokens)` is called after each token; `deadline_passed()` stops early, keeping
    what was produced (stop "timeout").
    """
    start, end = branch_region(text, token_start, token_end, until)
    prefix = text[:token_start] + alternative
    produced = ""
    count = 0
    stop = "length"
    options = {} if sampling is None else {"sampling": sampling}
    steps: Iterable = engine.greedy(prefix, max_new_tokens=max_new_tokens, document=document,
                                    should_stop=should_stop, **options) if max_new_tokens > 0 else ()
    eos_ids = getattr(engine, "eos_ids", set())
    for step in steps:
        count += 1
        produced += step.text
        if step.token.id in eos_ids:
            stop = "eos"
            break
        cut = boundary(produced, until, at_end_of_text=False)
        if cut is not None:
            produced, stop = produced[:cut], until
            break
        if on_step is not None:
            on_step(produced, count)
        if deadline_passed is not None and deadline_passed():
            stop = "timeout"
            break
    if stop in ("length", "eos", "timeout") and until == "sentence":
        cut = boundary(produced, until, at_end_of_text=True)  # `…big.` at the very end ends the sentence
        if cut is not None:
            produced = produced[:cut]
    return BranchResult(alternative + produced, start, end, count, stop)
