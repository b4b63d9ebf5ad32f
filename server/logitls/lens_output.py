"""`logitls lens FILE`: the document coloured by rank in the terminal, or as a standalone HTML page."""

from __future__ import annotations

import html
import json
import sys

from .lens import BUCKET_NAMES, DEFAULT_EDGES, bucket_of, document_stats, visible_spans
from .text import percent, visible

# GLTR's colours: green, yellow, red, purple
HTML_COLOURS = ("#a6f3a6", "#fff07a", "#ffb3b3", "#d9b3ff")
ANSI = ("\x1b[42;30m", "\x1b[43;30m", "\x1b[41;30m", "\x1b[45;30m")
RESET = "\x1b[0m"
PLAIN = (("", ""), ("{", "}"), ("[", "]"), ("<<", ">>"))  # markers when colour is not possible


def legend(edges=DEFAULT_EDGES) -> list[str]:
    bounds = [f"rank ≤ {edges[0]}", f"rank ≤ {edges[1]}", f"rank ≤ {edges[2]}", f"rank > {edges[2]}"]
    return [f"{name} ({bound})" for name, bound in zip(BUCKET_NAMES, bounds)]


def render_terminal(text: str, scores, colour: bool, edges=DEFAULT_EDGES) -> str:
    out, position = [], 0
    for span in visible_spans(text, scores, edges):
        out.append(text[position:span.start])
        piece = text[span.start:span.end]
        if colour:
            out.append(f"{ANSI[span.bucket]}{piece}{RESET}")
        else:
            opening, closing = PLAIN[span.bucket]
            out.append(f"{opening}{piece}{closing}")
        position = span.end
    out.append(text[position:])
    return "".join(out)


def summary(scores) -> str:
    stats = document_stats(scores)
    counts = [0, 0, 0, 0]
    for score in scores.tokens:
        if score.rank is not None:
            counts[bucket_of(score.rank)] += 1
    shares = ", ".join(f"{name} {n}" for name, n in zip(BUCKET_NAMES, counts))
    if stats.perplexity is None:
        return f"{stats.tokens} tokens; too few to score"
    window = "; scored with a sliding window" if stats.truncated else ""
    return (f"perplexity {stats.perplexity:.2f}, mean surprisal {stats.mean_surprisal_bits:.2f} bits, "
            f"{stats.tokens} tokens ({shares}){window}")


def as_json(text: str, scores, edges=DEFAULT_EDGES) -> dict:
    tokens = []
    for s in scores.tokens:
        tokens.append({
            "index": s.index, "id": s.token.id, "text": s.token.text, "start": s.start, "end": s.end,
            "prob": s.prob, "logprob": s.logprob, "rank": s.rank,
            "bucket": None if s.rank is None else BUCKET_NAMES[bucket_of(s.rank, edges)],
            "entropyBits": s.entropy_bits, "margin": s.margin,
            "alternatives": [{"text": a.text, "id": a.id, "prob": a.prob} for a in s.alternatives],
        })
    return {"stats": document_stats(scores).to_json(), "tokens": tokens}


def _uncertainty(s) -> str:
    if s.entropy_bits is None:
        return ""
    margin = "" if s.margin is None else f", top-two margin {s.margin:.3f}"
    return f"\nentropy here {s.entropy_bits:.2f} bits{margin}"


def render_html(title: str, text: str, scores, edges=DEFAULT_EDGES) -> str:
    body, position = [], 0
    for span in visible_spans(text, scores, edges):
        body.append(html.escape(text[position:span.start]))
        s = span.score
        alternatives = "\n".join(f"  {a.rank}. {visible(a.text)}  {percent(a.prob)}" for a in s.alternatives[:5])
        tip = (f"{visible(s.token.text)}: p = {s.prob:.4g} ({percent(s.prob)}), rank {s.rank}, "
               f"{s.surprisal_bits:.2f} bits{_uncertainty(s)}\nthe model preferred:\n{alternatives}")
        body.append(f'<span class="b{span.bucket}" title="{html.escape(tip)}">{html.escape(text[span.start:span.end])}'
                    "</span>")
        position = span.end
    body.append(html.escape(text[position:]))
    keys = "".join(f'<span class="b{i}">{html.escape(label)}</span> ' for i, label in enumerate(legend(edges)))
    styles = "".join(f".b{i}{{background:{c}}}" for i, c in enumerate(HTML_COLOURS))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>logitls lens: {html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:60em}}
pre{{white-space:pre-wrap;font:14px/1.6 ui-monospace,monospace;border:1px solid #ddd;padding:1em}}
span[title]{{border-radius:2px;cursor:help}}{styles}</style></head>
<body><h1>logitls lens: {html.escape(title)}</h1>
<p>{html.escape(summary(scores))}</p><p>{keys}</p>
<pre>{"".join(body)}</pre>
<p><small>Each token coloured by its rank under the model given all text before it (GLTR, Gehrmann et al.,
2019). Hover a token for its probability and the alternatives the model preferred.</small></p>
</body></html>
"""


def write_terminal(text: str, scores) -> None:
    colour = sys.stdout.isatty()
    print(render_terminal(text, scores, colour))
    print()
    if not colour:
        print("markers: " + ", ".join(f"{o}{name}{c}" if o else name for (o, c), name in zip(PLAIN, legend())))
    print(summary(scores))


def dump_json(text: str, scores) -> None:
    print(json.dumps(as_json(text, scores), ensure_ascii=False))


def jsonl_lines(header: dict, scores) -> list[str]:
    """`lens --jsonl`: a header naming the model (so a result can be reproduced), then one object per
    token: text, offsets, id, probability, log-probability (natural log), rank, entropy (bits),
    top-two margin and the model's top-k alternatives. The first token has null numbers where
    nothing precedes it."""
    lines = [json.dumps({"type": "header", **header}, ensure_ascii=False)]
    for s in scores.tokens:
        lines.append(json.dumps({
            "type": "token", "index": s.index, "text": s.token.text, "start": s.start, "end": s.end,
            "id": s.token.id, "prob": s.prob, "logprob": s.logprob, "rank": s.rank,
            "entropyBits": s.entropy_bits, "margin": s.margin,
            "alternatives": [{"rank": a.rank, "id": a.id, "text": a.text, "prob": a.prob, "logprob": a.logprob}
                             for a in s.alternatives],
        }, ensure_ascii=False))
    return lines
