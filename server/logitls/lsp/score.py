"""Score a selection: `logitls.scoreSelection`, `logitls.compareSelections` and a code action.

`logitls.scoreSelection` takes `{"textDocument": {"uri": URI}, "range": RANGE}`: the selection's
log-probability given all text before it, bits per token, perplexity and its least likely token,
shown as a message and returned as JSON. `logitls.compareSelections` takes two such selections
(`{"a": SELECTION, "b": SELECTION}`, or two arguments A and B; same or different documents) and
says which reads as less surprising, in bits per token.

The numbers come from the document's lens pass (the scores hover and the colours use), never from
a separate computation; which tokens count at the edges is `lens.tokens_in`'s rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from ..lens import EmptySelection, comparison_summary, score_selection, selection_summary
from .arguments import document_range, field, single_argument
from .lens import command_scores
from .positions import PositionError, PositionMap

if TYPE_CHECKING:
    from .server import LogitlsServer

SCORE = "logitls.scoreSelection"
COMPARE = "logitls.compareSelections"
SHAPE = '{"textDocument": {"uri": URI}, "range": {"start": {"line", "character"}, "end": {...}}}'


def parse_selection(arg: Any, command: str, name: str = "") -> tuple[str, types.Range]:
    """(uri, range) of one selection argument; InvalidParams saying what is wrong."""
    return document_range(command, f"expected {SHAPE}, got {arg!r}", arg, name)


async def selection_score(ls: LogitlsServer, uri: str, where: types.Range, command: str,
                          name: str = "the selection") -> dict[str, Any]:
    text, scores = await command_scores(ls, uri, command)
    positions = PositionMap(text, ls.position_encoding)
    try:
        start, end = positions.offset(where.start), positions.offset(where.end)
    except PositionError as exc:
        raise JsonRpcInvalidParams(f"{command}: {name}: {exc}") from exc
    try:
        scored = score_selection(text, scores, start, end)
    except EmptySelection as exc:
        raise JsonRpcInvalidParams(f"{command}: {name}: {exc}") from exc
    result = scored.to_json(text)
    result["uri"] = uri
    result["range"] = _range_json(positions.range(scored.start, scored.end))
    result["summary"] = selection_summary(scored, text)
    result["_scored"] = scored  # dropped before returning
    return result


def _range_json(where: types.Range) -> dict[str, Any]:
    return {"start": {"line": where.start.line, "character": where.start.character},
            "end": {"line": where.end.line, "character": where.end.character}}


def _public(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "_scored"}


def register(server: LogitlsServer) -> None:
    server.add_code_actions(types.CodeActionKind.Source, code_actions)

    @server.command(SCORE)
    async def score_command(ls, *args: Any) -> dict[str, Any]:
        uri, where = parse_selection(single_argument(SCORE, f"expected one argument {SHAPE}", args), SCORE)
        result = await selection_score(ls, uri, where, SCORE)
        ls.tell(result["summary"])
        return _public(result)

    @server.command(COMPARE)
    async def compare_command(ls, *args: Any) -> dict[str, Any]:
        if len(args) == 1 and field(args[0], "a") is not None:
            pair = (field(args[0], "a"), field(args[0], "b"))
        elif len(args) == 2:
            pair = args
        else:
            raise JsonRpcInvalidParams(f'{COMPARE}: expected {{"a": SELECTION, "b": SELECTION}} or two arguments '
                                       f"A, B, each {SHAPE}; got {args!r}")
        (uri_a, range_a), (uri_b, range_b) = (parse_selection(arg, COMPARE, name)
                                              for arg, name in zip(pair, ("selection A", "selection B")))
        a = await selection_score(ls, uri_a, range_a, COMPARE, "selection A")
        b = await selection_score(ls, uri_b, range_b, COMPARE, "selection B")
        summary = comparison_summary(a["_scored"], b["_scored"])
        ls.tell(summary)
        return {"a": _public(a), "b": _public(b), "bitsPerTokenDifference": a["bitsPerToken"] - b["bitsPerToken"],
                "summary": summary}


async def code_actions(ls: LogitlsServer, params: types.CodeActionParams) -> list[types.CodeAction]:
    """"Score selection (logitls)" on a non-empty range (lsp/code_actions.py)."""
    start, end = params.range.start, params.range.end
    if (end.line, end.character) <= (start.line, start.character):
        return []
    only = params.context.only
    if only and types.CodeActionKind.Source not in only:
        return []
    argument = {"textDocument": {"uri": params.text_document.uri}, "range": _range_json(params.range)}
    return [types.CodeAction(title="Score selection (logitls)", kind=types.CodeActionKind.Source,
                             command=types.Command(title="Score selection (logitls)", command=SCORE,
                                                   arguments=[argument]))]


__all__ = ["SCORE", "COMPARE", "code_actions", "parse_selection", "register"]
