"""How token text is shown to people: shared by the CLI and the language server (no torch here)."""

from __future__ import annotations

import re

VISIBLE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"})


def visible(token_text: str) -> str:
    """Token text with whitespace made visible, so ' Paris' and 'Paris' look different in a menu."""
    return token_text.translate(VISIBLE) if token_text else "∅"


def percent(prob: float) -> str:
    """A probability the way a menu shows it: 77.3%, 0.04%, <0.01%."""
    if prob >= 0.00995:
        return f"{prob * 100:.1f}%"
    if prob >= 0.00005:
        return f"{prob * 100:.2f}%"
    return "<0.01%"


_SURROGATE = re.compile("[\ud800-\udfff]")


def without_lone_surrogates(text: str) -> str:
    """The text with each lone UTF-16 surrogate as U+FFFD, which tokenizers take.

    JSON can carry a lone surrogate (`"\\ud800"`, and editors do send them), and so can a command line
    (Python decodes bytes that are not UTF-8 to U+DC80-U+DCFF); Python keeps it as one code point, which
    the tokenizer refuses. U+FFFD is one code point and one UTF-16 unit too (three UTF-8 bytes, as a
    surrogate counts), so every offset and position stays where it was.
    """
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text
