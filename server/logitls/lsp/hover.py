"""textDocument/hover: how likely the token under the cursor was, and what the model preferred."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from lsprotocol import types

from ..text import percent, visible
from .branch_offer import hover_branch_link
from .lens import scored_token
from .worker import JobCancelled, ModelUnavailable

if TYPE_CHECKING:
    from .server import LogitlsServer

logger = logging.getLogger("logitls")


def _row_text(choice) -> str:
    return visible(choice.text).replace("`", "ˋ").replace("|", "\\|")


def hover_markdown(score, vocab_size: int | None, limit: int | None = None, branch_link=None,
                   footer: str = "") -> str:
    """The hover for one scored token; `limit` caps the alternatives listed (`hoverAlternatives`).

    `branch_link(choice)`: a markdown link that branches on that alternative (`logitls.branch`), or ""
    where none is offered; given, the table has a last column for them (VS Code's command links).
    `footer`: a last line in italics under the numbers (what they are worth: `numbers_note`)."""
    shown = visible(score.token.text).replace("`", "ˋ")
    listed = score.alternatives if limit is None else score.alternatives[:limit]
    if score.prob is None and not score.alternatives:
        if score.index == 0:
            return f"**`{shown}`**: the first token; nothing before it to condition on."
        return f"**`{shown}`**: no probability for this token: the model's server sent none for it."
    if score.prob is None:  # a remote backend lists only its top k, and the token is not among them
        bound = score.alternatives[-1]  # the least likely the server listed, even when fewer are shown
        lines = [f"**`{shown}`**: below the {len(score.alternatives)} alternatives the server listed: "
                 f"p < {percent(bound.prob) if bound.prob >= 0.00005 else f'{bound.prob:.1e}'}, "
                 f"rank > {len(score.alternatives)}"
                 f"{f' of {vocab_size}' if vocab_size else ''}", "", "| rank | token | p |", "|---:|---|---:|"]
        lines += [f"| {a.rank} | `{_row_text(a)}` | {percent(a.prob)} |" for a in listed]
        return _with_footer(lines, footer)
    # A remote backend may know neither the vocabulary size nor a rank below its top-k alternatives.
    rank = f"rank {score.rank}" if score.rank is not None else f"rank > {len(score.alternatives)}"
    head = [
        f"**`{shown}`**: p = {score.prob:.4g} ({percent(score.prob)}), {rank}{f' of {vocab_size}' if vocab_size else ''}, "
        f"{score.surprisal_bits:.2f} bits",
        *([f"how unsure the model was here: entropy {score.entropy_bits:.3f} bits, top-two margin "
           f"{score.margin:.4f} (p₁ − p₂)"] if score.entropy_bits is not None and score.margin is not None else []),
        *([f"under the compared model: p = {math.exp(score.compare_logprob):.4g} "
           f"({percent(math.exp(score.compare_logprob))}); log-ratio {score.compare_delta:+.3f} nats "
           f"({'likelier here' if score.compare_delta > 0 else 'likelier there'})"]
          if score.compare_delta is not None else []),
    ]
    # Two trailing spaces: a markdown line break (VS Code joined these lines into one paragraph);
    # invisible where the markdown is shown as text (a terminal editor's float).
    lines = ["  \n".join(head), "", "| rank | token | p |", "|---:|---|---:|"]
    if branch_link is not None:
        lines[-2:] = ["| rank | token | p | branch |", "|---:|---|---:|:---:|"]
    for alternative in listed:
        mark = " ◀" if alternative.id == score.token.id else ""
        link = "" if branch_link is None else f" {branch_link(alternative)} |"
        lines.append(f"| {alternative.rank} | `{_row_text(alternative)}`{mark} | {percent(alternative.prob)} |{link}")
    return _with_footer(lines, footer)


def _with_footer(lines: list[str], footer: str) -> str:
    return "\n".join([*lines, "", f"_{footer}_"] if footer else lines)


def numbers_note(engine, score) -> str:
    """What the hover's numbers are worth, said under them: nothing claims more than it gave. A
    server's: exact, exact within its top k, or a bound; the local model's: which code computed them
    (the native forward or transformers', exact or packed weights and how many layers), and where
    torch's bf16 int4 kernel did, that they move slightly."""
    if engine is None:
        return ""
    if not engine.capabilities.scored_remotely:
        loaded = engine.loaded
        if loaded.weights != "packed":
            return f"{loaded.forward} forward, exact weights"
        moved = ": probabilities move slightly" if loaded.kernel == "bf16" else ""
        return f"{loaded.forward} forward, packed weights ({loaded.kernel} kernel, {loaded.packed_layers} layers){moved}"
    server = engine.loaded.server_kind
    if score.prob is None:
        if not score.alternatives:
            return ""  # no numbers shown (the first token)
        return (f"bound: the {server} server lists its top {len(score.alternatives)} only, "
                f"and this token is not among them")
    if engine.capabilities.ranks == "exact":
        return f"exact: probability and rank over the whole vocabulary, from the {server} server"
    if score.rank is None:
        return f"probability exact, rank a bound: below the {len(score.alternatives)} the {server} server listed"
    return f"exact: within the top {len(score.alternatives)} the {server} server listed"


def unavailable(engine) -> str:
    return (f"**logitls**: unavailable: the {engine.loaded.server_kind} server at {engine.loaded.source} gives no "
            f"probabilities of a text's tokens, so hover has nothing to show; completion and generate work.")


def register(server: LogitlsServer) -> None:
    @server.feature(types.TEXT_DOCUMENT_HOVER)
    async def hover(ls: LogitlsServer, params: types.HoverParams) -> types.Hover | None:
        uri = params.text_document.uri
        text, _version = ls.snapshot(uri)
        positions, offset = ls.offset_at(text, params.position)
        alternatives = ls.settings.hover_alternatives
        engine = ls.engine
        if engine is not None and engine.capabilities.ranks == "none":
            return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=unavailable(engine)))
        try:
            score = await scored_token(ls, uri, text, offset)
        except (ModelUnavailable, JobCancelled) as exc:
            logger.debug("hover: none (%s)", exc)
            return None
        engine = ls.engine
        vocab_size = engine.vocab_size if engine is not None and getattr(engine, "vocab_size_known", True) else None
        if score is None:
            if engine is not None and engine.capabilities.ranks == "none":  # learnt on this very hover
                return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown,
                                                                value=unavailable(engine)))
            return None
        link = hover_branch_link(ls, uri, positions.position(score.start), score)
        value = hover_markdown(score, vocab_size, limit=alternatives, branch_link=link,
                               footer=numbers_note(engine, score))
        return types.Hover(
            contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=value),
            range=positions.range(score.start, score.end),
        )
