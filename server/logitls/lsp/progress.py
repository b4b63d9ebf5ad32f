"""Work-done progress (`$/progress`) where the client supports it: for the model load and the commands."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING

from lsprotocol import types

if TYPE_CHECKING:
    from .server import LogitlsServer

logger = logging.getLogger("logitls")


def supports_progress(server: LogitlsServer) -> bool:
    window = server.client_capabilities.window
    return bool(window and window.work_done_progress)


async def begin_progress(server: LogitlsServer, title: str, message: str, cancellable: bool) -> str | None:
    """Create and begin a work-done progress if the client supports it; None if not.

    The create request is bounded: a client that never answers it must not hold up the work.
    """
    if not supports_progress(server):
        return None
    token = f"logitls-{uuid.uuid4()}"
    try:
        await asyncio.wait_for(server.work_done_progress.create_async(token), 5)
        server.work_done_progress.begin(token, types.WorkDoneProgressBegin(
            title=title, message=message, cancellable=cancellable, percentage=0 if cancellable else None))
    except Exception:  # noqa: BLE001 - progress is a courtesy; the work goes on without it
        logger.debug("work done progress unavailable", exc_info=True)
        return None
    return token
