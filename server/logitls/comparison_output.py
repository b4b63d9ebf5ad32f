"""`logitls lens FILE --compare MODEL`: which model found each token likelier, in the terminal, as
JSON or as a standalone HTML page."""

from __future__ import annotations

import html
import json
import math
import sys

from .lens import COMPARE_EDGES, compare_bucket_of
from .text import percent, visible

ANSI = {"main+": "\x1b[42;30m", "main++": "\x1b[102;30m", "other+": "\x1b[41;30m", "other++": "\x1b[101;30m"}
HTML_COLOURS = {"main+": "#c8f0c8", "main++": "#7fd67f", "other+": "#f6c8c8", "other++": "#e88a8a"}
RESET = "\x1b[0m"


KINDS = ("main+", "main++", "other+", "other++")  # the lens's compare buckets (lens.COMPARE_NAMES), as CSS/ANSI keys


def bucket(delta: float | None) -> str | None:
    """Where |log p(main) − log p(other)| (nats) puts a token: about the same (None), likelier under one, much likelier."""
    index = compare_bucket_of(delta)
    return None if index is None else KINDS[index]


def summary(rows, main_name: str, other_name: str) -> str:
    deltas = [r.compare_delta for r in rows if r.compare_delta is not None]
    if not deltas:
        return f"{len(rows)} tokens; too few to compare"
    mean = sum(deltas) / len(deltas)
    bits = mean / math.log(2)
    likelier = sum(d > 0 for d in deltas)
    return (f"{len(deltas)} tokens scored: {main_name} is {abs(bits):.3f} bits/token "
            f"{'less' if bits > 0 else 'more'} surprised than {other_name}; it found {likelier} tokens likelier, "
            f"{len(deltas) - likelier} less likely (mean log-ratio {mean:+.4f} nats)")


def as_json(text: str, rows, main_name: str, other_name: str) -> dict:
    return {
        "main": main_name, "other": other_name, "summary": summary(rows, main_name, other_name),
        "tokens": [{"index": r.index, "id": r.token.id, "text": r.token.text, "start": r.start, "end": r.end,
                    "logprob": r.logprob, "otherLogprob": r.compare_logprob, "delta": r.compare_delta} for r in rows],
    }


def render_terminal(text: str, rows, colour: bool) -> str:
    out, position = [], 0
    for r in rows:
        kind = bucket(r.compare_delta)
        if kind is None or r.start < position:
            continue
        out.append(text[position:r.start])
        piece = text[r.start:r.end]
        out.append(f"{ANSI[kind]}{piece}{RESET}" if colour else f"{'{' if kind.startswith('main') else '['}{piece}"
                                                                  f"{'}' if kind.startswith('main') else ']'}")
        position = r.end
    out.append(text[position:])
    return "".join(out)


def render_html(title: str, text: str, rows, main_name: str, other_name: str) -> str:
    body, position = [], 0
    for r in rows:
        kind = bucket(r.compare_delta)
        if kind is None or r.start < position:
            continue
        body.append(html.escape(text[position:r.start]))
        tip = (f"{visible(r.token.text)}: {main_name} {percent(math.exp(r.logprob))}, {other_name} "
               f"{percent(math.exp(r.compare_logprob))} (log-ratio {r.compare_delta:+.3f} nats)")
        body.append(f'<span class="{kind.replace("+", "p")}" title="{html.escape(tip)}">'
                    f"{html.escape(text[r.start:r.end])}</span>")
        position = r.end
    body.append(html.escape(text[position:]))
    styles = "".join(f".{k.replace('+', 'p')}{{background:{c}}}" for k, c in HTML_COLOURS.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>logitls compare: {html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:60em}}
pre{{white-space:pre-wrap;font:14px/1.6 ui-monospace,monospace;border:1px solid #ddd;padding:1em}}{styles}</style>
</head><body><h1>logitls compare: {html.escape(title)}</h1>
<p>{html.escape(summary(rows, main_name, other_name))}</p>
<p><span class="mainp">likelier under {html.escape(main_name)}</span> <span class="mainpp">much likelier (≥ {COMPARE_EDGES[1]} nats)</span>
<span class="otherp">likelier under {html.escape(other_name)}</span> <span class="otherpp">much likelier</span></p>
<pre>{"".join(body)}</pre></body></html>
"""


def write(text: str, rows, main_name: str, other_name: str, *, as_json_output: bool, html_path: str | None,
          title: str) -> None:
    if html_path:
        from pathlib import Path

        Path(html_path).write_text(render_html(title, text, rows, main_name, other_name), encoding="utf-8")
        print(f"wrote {html_path}: {summary(rows, main_name, other_name)}", file=sys.stderr)
    if as_json_output:
        print(json.dumps(as_json(text, rows, main_name, other_name), ensure_ascii=False))
    elif not html_path:
        colour = sys.stdout.isatty()
        print(render_terminal(text, rows, colour))
        print()
        if not colour:
            print(f"markers: {{likelier under {main_name}}}, [likelier under {other_name}] (|log-ratio| ≥ {COMPARE_EDGES[0]})")
        print(summary(rows, main_name, other_name))
