"""The document's numbers: perplexity, mean surprisal and token count, as a code lens on the first
line and from the `logitls.documentStats` command (arguments `[{"textDocument": {"uri": URI}}]`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lsprotocol import types

from ..lens import document_stats
from .arguments import document_uri, single_argument
from .lens import command_scores, scores_if_enabled

if TYPE_CHECKING:
    from .server import LogitlsServer

COMMAND = "logitls.documentStats"
USAGE = 'expected one argument {"textDocument": {"uri": URI}}'


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
    """The document of `[{"textDocument": {"uri": URI}}]` (or `[URI]`)."""
    arg = single_argument(COMMAND, USAGE, args)
    return arg if isinstance(arg, str) and arg else document_uri(COMMAND, USAGE, arg)


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
