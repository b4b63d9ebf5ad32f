"""textDocument/inlineCompletion (LSP 3.18): the greedy continuation as ghost text.

With token healing (completion.tokenHealing) the ghost text after `…is ` starts with `Paris`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lsprotocol import types

from .continuation import continuation
from .worker import JobCancelled, ModelUnavailable

if TYPE_CHECKING:
    from .server import LogitlsServer

logger = logging.getLogger("logitls")


def cut_at_line_end(text: str) -> str | None:
    """The text up to the first newline after some content, or None while the line goes on."""
    content_start = len(text) - len(text.lstrip("\n"))
    newline = text.find("\n", content_start)
    return text[:newline] if newline >= 0 else None


def register(server: LogitlsServer) -> None:
    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: LogitlsServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
        settings = ls.settings.inline
        if not settings.enabled:
            return types.InlineCompletionList(items=[])
        uri = params.text_document.uri
        text, _version = ls.snapshot(uri)
        _, offset = ls.offset_at(text, params.position)
        prefix = text[:offset]
        heal = ls.settings.completion.token_healing

        def run(engine, stop) -> str:
            produced = ""
            for step in continuation(engine, prefix, heal, max_new_tokens=settings.max_new_tokens, document=uri,
                                     should_stop=stop):
                produced += step.text
                if settings.stop_at_end_of_line:
                    line = cut_at_line_end(produced)
                    if line is not None:
                        return line
            return produced

        try:
            suggestion = await ls.run_model(run, key=(uri, "inline"))
        except (ModelUnavailable, JobCancelled) as exc:
            logger.debug("inline completion: none (%s)", exc)
            return types.InlineCompletionList(items=[])
        if not suggestion.strip():
            return types.InlineCompletionList(items=[])
        cursor = params.position
        return types.InlineCompletionList(items=[types.InlineCompletionItem(
            insert_text=suggestion, range=types.Range(start=cursor, end=cursor))])
