"""How token text is shown to people: shared by the CLI and the language server (no torch here)."""

from __future__ import annotations

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
