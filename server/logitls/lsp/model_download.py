"""The default model's first-use download (engine/model_store.py) as the editor sees it: `$/progress`
reports on the load's progress token and a status line, instead of a bar on stderr."""

from __future__ import annotations

import asyncio

from lsprotocol import types

from .server import LogitlsServer, logger


def fetch_default_model(server: LogitlsServer, spec: str | None, token: str | None,
                        loop: asyncio.AbstractEventLoop) -> None:
    """On the model thread, before the load: fetch the default model if this install has none yet."""
    from ..engine import model_store
    from ..engine.loading import DEFAULT_MODEL, ModelLoadError

    if (spec or DEFAULT_MODEL).strip() != DEFAULT_MODEL or model_store.find() is not None:
        return
    shown = {"key": None}

    def report(done: int, total: int | None, message: str) -> None:
        percentage = min(100, done * 100 // total) if total else None
        if (message, percentage) == shown["key"]:
            return
        if shown["key"] is None or shown["key"][0] != message:
            logger.info("%s", message)
        shown["key"] = (message, percentage)
        text = f"{message}: {percentage}%" if percentage is not None else f"{message}…"
        loop.call_soon_threadsafe(server.set_status, "loading", text)
        if token is not None:
            loop.call_soon_threadsafe(server.work_done_progress.report, token,
                                      types.WorkDoneProgressReport(message=text, percentage=percentage))

    try:
        model_store.ensure(progress=report)
    except model_store.ModelFetchError as exc:
        raise ModelLoadError(str(exc)) from exc
