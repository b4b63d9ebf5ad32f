"""textDocument/hover: how likely the token under the cursor was, and what the model preferred."""

from __future__ import annotations

import math

from lsprotocol import types

from ..text import percent, visible
from .lens import LensUnavailable, document_scores
from .server import JobCancelled, LogitlsServer, ModelUnavailable, logger


def token_at(scores, offset: int):
    """The token whose characters contain `offset` (the first, where byte pieces of one character overlap)."""
    for score in scores.tokens:
        if score.start <= offset < score.end:
            return score
    return None


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


def score_at(engine, text: str, offset: int, uri: str, should_stop):
    """The scored token holding `offset`. Locally, the lens's scores (a sliding window over a document
    longer than the context, so a token far from the end has the probability the lens colours it by).
    A server pays for every token it scores: it is asked for as little as it can answer."""
    if engine.capabilities.scored_remotely:
        return engine.token_score_at(text, offset, document=uri, should_stop=should_stop)
    return token_at(engine.document_scores(text, document=uri, should_stop=should_stop), offset)


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
    server = engine.loaded.dtype
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
    return (f"**logitls**: unavailable: the {engine.loaded.dtype} server at {engine.loaded.source} gives no "
            f"probabilities of a text's tokens, so hover has nothing to show; completion and generate work.")


async def _lens_scores(ls: LogitlsServer, uri: str, text: str):
    """The lens pass's scores for this version of the document, shared rather than computed again
    (on a long document that is every earlier window); None where the lens cannot serve."""
    if not ls.settings.lens.enabled:
        return None
    try:
        scored_text, scores = await document_scores(ls, uri, debounce=False)
    except LensUnavailable:
        return None
    return scores if scored_text == text else None


async def scored_token(ls: LogitlsServer, uri: str, text: str, offset: int, feature: str = "hover"):
    """The scored token whose characters hold `offset` (the one the hover shows), or None.
    `feature` keys the model job: a newer request of the same feature on the document supersedes it.
    Raises ModelUnavailable or JobCancelled."""
    scores = await _lens_scores(ls, uri, text)
    if scores is None:
        return await ls.run_model(lambda engine, stop: score_at(engine, text, offset, uri, stop),
                                  key=(uri, feature))
    return token_at(scores, offset)


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
        from .branch import hover_branch_link  # branch imports this module

        link = hover_branch_link(ls, uri, positions.position(score.start), score)
        value = hover_markdown(score, vocab_size, limit=alternatives, branch_link=link,
                               footer=numbers_note(engine, score))
        return types.Hover(
            contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=value),
            range=positions.range(score.start, score.end),
        )
