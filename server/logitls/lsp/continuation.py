"""The greedy continuation after the cursor, healed or not: what inline completion shows and
`logitls.generate` writes (shared by both features; it imports none)."""

from __future__ import annotations


def continuation(engine, prefix: str, heal: bool, **options):
    """Greedy steps after the cursor; with token healing the first completes the typed word (`…is ` →
    `Paris`), so each step's text is what goes after the cursor either way."""
    if heal and engine.capabilities.healing:
        return engine.healed_greedy(prefix, **options)
    return engine.greedy(prefix, **options)
