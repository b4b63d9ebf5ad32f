"""The document's numbers: perplexity, mean surprisal and token count, as a code lens on the first
line and from the `logitls.documentStats` command (arguments `[{"textDocument": {"uri": URI}}]`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from ..lens import document_stats
from .lens import command_scores, scores_if_enabled

if TYPE_CHECKING:
    from .server import LogitlsServer

COMMAND = "logitls.documentStats"


def lens_title(stats, scored_by: str = "") -> str:
    """`scored_by`: the server that scored the document (backend openai), "" for the local model."""
    remote = f" · scored remotely ({scored_by})" if scored_by else ""
    if stats.perplexity is None:
        return f"logitls: {stats.tokens} tokens, too few to score{remote}"
    window = " (sliding window)" if stats.truncated else ""
    return (f"logitls: perplexity {stats.perplexity:.2f} · {stats.mean_surprisal_bits:.2f} bits/token · "
            f"{stats.tokens} tokens{window}{remote}")


def scored_by(ls: LogitlsServer) -> str:
    engine = ls.engine
    if engine is None or not engine.capabilities.scored_remotely:
        return ""
    return f"{engine.loaded.server_kind} at {engine.loaded.source}"


def _uri_argument(args: tuple[Any, ...]) -> str:
    if len(args) == 1:
        arg = args[0]
        if isinstance(arg, str):
            return arg
        document = arg.get("textDocument") if isinstance(arg, dict) else getattr(arg, "textDocument", None)
        uri = document.get("uri") if isinstance(document, dict) else getattr(document, "uri", None)
        if isinstance(uri, str):
            return uri
    raise JsonRpcInvalidParams(f'{COMMAND}: expected one argument {{"textDocument": {{"uri": URI}}}}; got {args!r}')


def register(server: LogitlsServer) -> None:
    @server.feature(types.TEXT_DOCUMENT_CODE_LENS)
    async def code_lens(ls: LogitlsServer, params: types.CodeLensParams) -> list[types.CodeLens]:
        uri = params.text_document.uri
        scored = await scores_if_enabled(ls, uri, ls.settings.lens.code_lens, "code lens")
        if scored is None:
            return []
        stats = document_stats(scored[1])
        top = types.Range(start=types.Position(line=0, character=0), end=types.Position(line=0, character=0))
        return [types.CodeLens(range=top, command=types.Command(
            title=lens_title(stats, scored_by(ls)), command=COMMAND, arguments=[{"textDocument": {"uri": uri}}]))]

    @server.command(COMMAND)
    async def document_stats_command(ls, *args: Any) -> dict[str, Any]:
        uri = _uri_argument(args)
        _, scores = await command_scores(ls, uri, COMMAND)
        stats = document_stats(scores)
        ls.tell(lens_title(stats, scored_by(ls)).removeprefix("logitls: "))
        return stats.to_json()
